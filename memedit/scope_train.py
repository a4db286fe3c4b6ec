"""Training data, training, calibration and evaluation of the scope classifier.

>>> from memedit.scope_train import train_scope_classifier
>>> metrics = train_scope_classifier("../shared/data", "out/scope")  # doctest: +SKIP
>>> metrics["test"]["overall"]["f1"]                                 # doctest: +SKIP
0.97

The data are public knowledge-editing files read by path (never copied):

* ``scope/edit-questions.jsonl`` -- an edit sentence and questions in its scope;
  parsed into (subject, relation, object) with ``mquake/cloze-templates.json``;
* ``counterfact/counterfact-dev.jsonl`` -- the edit is ``prompt + target_new``;
  ``prompt`` / ``rephrase_prompt`` are in scope, ``locality_prompt`` (same
  relation, another subject) is not;
* ``zsre/zsre-dev.jsonl`` (KnowEdit) -- the edit is ``prompt + target_new``;
  ``prompt`` / ``rephrase_prompt`` are in scope, the ``Relation_Specificity``
  prompts (same subject, another relation) are not; ``portability`` prompts are
  kept for evaluation only.

Generated on top: object-side questions ("Who is {object}?") and generic
subject questions ("Tell me about {subject}.") from a few general templates,
questions that join two edits' questions, and negatives: random edits (easy),
same subject / other relation, same relation / other subject, the edit's object
asked about in another relation, and the nearest edits by embedding that are
none of these (what the router's index will hand the classifier).

Training only, two augmentations: subject-free copies of some positives (the
shared subject replaced by a plain word such as "someone" on both sides, with
subject-free negatives of other relations), so entity-free edits and their
paraphrases are judged on meaning; and generated same-subject edits of another
relation (from the cloze templates), the hardest near miss, of which the data
hold few. Relations in :data:`NEAR_SYNONYM_RELATIONS` (author / creator, ...)
never make same-subject negatives, and zsRE locality probes that ask the edited
relation itself (KnowEdit label noise) are dropped.

Edits are split by subject with the project's one tune / report split
(:mod:`memedit.eval.splits`): the report side is the ``test`` split, and the
tune side's subjects are shared between train and calibration with a fixed
seed (so neither an edit nor its subject's other edits cross splits); pairs
are only formed inside a split. The MLP is fitted on train, Platt scaling and
the threshold on calibration, and metrics are reported on test (the report
side). The artifact records the split's definition and sha256.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .errors import MemeditError, ValidationError
from .scope import (
    EMBEDDING_PARTS,
    FEATURE_SET,
    FORMAT_VERSION,
    LEXICAL_FEATURES,
    ScopeClassifier,
    embedding_features,
    lexical_feature_matrix,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "test")
#: positive pair kinds that ask the edit in other words
PARAPHRASE_KINDS = frozenset({"question", "cf_rephrase", "zsre_rephrase", "masked_positive"})
DATA_FILES = {
    "edit_questions": "scope/edit-questions.jsonl",
    "cloze_templates": "mquake/cloze-templates.json",
    "counterfact": "counterfact/counterfact-dev.jsonl",
    "zsre": "zsre/zsre-dev.jsonl",
}
# General templates for questions about one entity; never built from evaluation questions.
ENTITY_TEMPLATES = (
    "Who is {}?",
    "What is {}?",
    "Tell me about {}.",
    "What do you know about {}?",
    "Who or what is {}?",
    "Give me some information about {}.",
)
JOIN_TEMPLATES = ("{a}, and {b}", "{a}? Also, {b}", "{a} and {b}")
# Plain words that stand in for a hidden subject; varied, so no one token marks a masked pair.
MASK_WORDS = ("someone", "something", "it", "this one", "the one", "that", "a certain one", "the said one")

POSITIVE_KINDS = (
    "question",  # edit-questions: a question in the edit's scope
    "cf_prompt",
    "cf_rephrase",
    "zsre_prompt",
    "zsre_rephrase",
    "reverse",  # generic question about the edit's object ("Who is Trump?")
    "subject_generic",  # generic question about the edit's subject ("Tell me about Carl Sagan.")
    "multi_edit",  # a question joining two edits' questions, paired with each
    "same_fact",  # another edit with the same subject and relation (a conflicting edit)
    "masked_positive",  # train only: a positive with its subject replaced by "someone" on both sides
)
NEGATIVE_KINDS = (
    "easy",  # a random other edit
    "same_subject",  # same subject, other relation
    "same_relation",  # same relation, other subject
    "object_other_relation",  # the edit's object asked about in another relation
    "cf_locality",  # CounterFact locality_prompt vs its own edit
    "zsre_locality",  # zsRE Relation_Specificity prompt vs its own edit
    "retrieved",  # among the nearest edits by embedding, none of the above
    "masked_negative",  # train only: a subject-free question vs a subject-free edit of another relation
    "synthetic_same_subject",  # train only: a question vs a generated edit of its subject in another relation
)
EVAL_ONLY_KINDS = ("zsre_portability",)


def default_data_dir() -> Path:
    """``$MEMEDIT_DATA_DIR``, else ``../shared/data`` next to the project root."""
    from .eval.splits import default_data_dir as _default

    return _default()


def memedit_version() -> str:
    """The installed memedit version, or the one in ``pyproject.toml`` for a source checkout."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("memedit")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        if pyproject.is_file():
            m = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.M)
            if m:
                return m.group(1)
        return "0+unknown"


# --------------------------------------------------------------------------- configuration


@dataclass
class ScopeTrainConfig:
    """Everything that shapes the data and the model; stored in the artifact's JSON."""

    seed: int = 0
    #: train : calibration inside the tune side (the third share, test, is the report side: see split_cases)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    max_edits_per_source: int | None = None  # cap for quick runs
    subject_generic_fraction: float = 0.5  # share of subjects that get a generic question
    multi_edit_questions: float = 0.08  # joined questions, as a share of the split's edits
    neg_easy: int = 1
    neg_same_subject: int = 2
    neg_same_relation: int = 1
    neg_object_other_relation: int = 1
    neg_retrieved: int = 3
    synthetic_same_subject: int = 1  # train only: questions per edit paired with a generated other-relation edit
    hidden: tuple[int, int] = (256, 64)
    #: loss weight of paraphrase positives (PARAPHRASE_KINDS) against every other pair; 2.0 was chosen on the
    #: calibration split (equal F1 0.978 with 1.0, cf_rephrase recall 0.954 vs 0.949)
    paraphrase_weight: float = 2.0
    dropout: float = 0.1
    epochs: int = 8
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    threads: int | None = None  # torch threads for embedding + fitting; None: see torch_threads()
    mask_augment: float = 0.3  # share of train positives that also get a subject-free ("someone") copy
    mask_words: tuple[str, ...] = ()  # what stands in for the hidden subject; () = MASK_WORDS
    embedding_parts: tuple[str, ...] = EMBEDDING_PARTS

    def __post_init__(self) -> None:
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValidationError(f"split_fractions must be three shares summing to 1, got {self.split_fractions}")
        self.split_fractions = tuple(float(x) for x in self.split_fractions)  # type: ignore[assignment]
        self.hidden = tuple(int(x) for x in self.hidden)  # type: ignore[assignment]
        self.embedding_parts = tuple(self.embedding_parts)
        self.mask_words = tuple(self.mask_words) or MASK_WORDS


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run a block with ``n`` torch threads (restored afterwards).

    ``None`` keeps torch's default unless the machine is already busy (load
    average at or above the core count), where one thread is several times
    faster than two fighting for oversubscribed cores.
    """
    import torch

    before = torch.get_num_threads()
    if n is None:
        cores = os.cpu_count() or 1
        busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores
        n = 1 if busy else before
    torch.set_num_threads(max(int(n), 1))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- data records


def _norm(text: str) -> str:
    """Lower-cased tokens joined by single spaces and padded, for whole-phrase containment tests."""
    return " " + " ".join(re.findall(r"[^\W_]+", text.lower())) + " "


@dataclass
class EditCase:
    """One edit with its parsed parts and the probes that came with it."""

    text: str
    subject: str
    relation: str
    obj: str
    source: str
    questions: list[tuple[str, str]] = field(default_factory=list)  # (text, positive kind)
    near_misses: list[tuple[str, str]] = field(default_factory=list)  # (text, negative kind), vs this edit only
    eval_only: list[tuple[str, str]] = field(default_factory=list)  # (text, kind): positives, reported, not trained
    dropped_near_misses: int = 0  # probes dropped as likely mislabelled
    template: str | None = None  # the cloze template of its relation ("[X] is employed by __"), where known

    @property
    def group(self) -> str:
        """The split key: edits that share a subject share a split."""
        return _norm(self.subject).strip()


@dataclass
class PairSet:
    """Aligned (question, edit) pairs of one split with labels and kinds."""

    questions: list[str]
    edits: list[str]
    labels: np.ndarray  # float32, 1 = in scope
    kinds: list[str]
    split: str

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        c = Counter(self.kinds)
        return {k: c[k] for k in sorted(c)}


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MemeditError(
            f"{what} not found at {path}; pass --data-dir (or set MEMEDIT_DATA_DIR) to the folder holding "
            f"{', '.join(DATA_FILES.values())}"
        )
    return path


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MemeditError(f"{path}:{lineno}: not valid JSON ({exc})") from exc


def resolve_data_files(data_dir: str | Path | None = None, **overrides: str | Path | None) -> dict[str, Path]:
    """Paths of the training files under ``data_dir``; each may be overridden; all must exist."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    files = {}
    for key, rel in DATA_FILES.items():
        given = overrides.get(key)
        files[key] = _require(Path(given) if given else root / rel, key.replace("_", " ") + " file")
    return files


def _cloze_patterns(path: Path) -> list[tuple[str, re.Pattern[str]]]:
    templates = json.loads(path.read_text(encoding="utf-8"))
    pats = []
    for rel, tpl in templates.items():
        body = re.escape(tpl).replace(re.escape("[X]"), "(?P<s>.+?)").replace(re.escape("__"), "(?P<o>.+)")
        pats.append((len(tpl.replace("[X]", "").replace("__", "")), rel, re.compile("^" + body + "$")))
    pats.sort(key=lambda p: -p[0])  # most specific template first ("The headquarters of [X] is located in ...")
    return [(rel, pat) for _, rel, pat in pats]


def load_edit_questions(path: Path, cloze_templates: Path, limit: int | None = None) -> list[EditCase]:
    """Edit sentences with their in-scope questions; rows repeating an edit are merged."""
    patterns = _cloze_patterns(cloze_templates)
    templates = json.loads(cloze_templates.read_text(encoding="utf-8"))
    cases: dict[str, EditCase] = {}
    unparsed = 0
    for row in _read_jsonl(path):
        text = str(row["edit"]).strip()
        if text not in cases:
            if limit is not None and len(cases) >= limit:
                continue
            for rel, pat in patterns:
                m = pat.match(text)
                if m:
                    cases[text] = EditCase(text, m["s"].strip(), rel, m["o"].strip(), "edit_questions",
                                           template=templates[rel])
                    break
            else:
                unparsed += 1
                continue
        seen = {q for q, _ in cases[text].questions}
        for q in row["questions"]:
            q = str(q).strip()
            if q and q not in seen:
                cases[text].questions.append((q, "question"))
                seen.add(q)
    if unparsed:
        log.warning("%d edit sentences in %s match no cloze template and were skipped", unparsed, path)
    return list(cases.values())


def load_counterfact(path: Path, limit: int | None = None) -> list[EditCase]:
    """CounterFact requests as edits ``prompt + target_new`` with their probes."""
    cases = []
    for row in _read_jsonl(path):
        if limit is not None and len(cases) >= limit:
            break
        subject, prompt = str(row["subject"]), str(row["prompt"]).strip()
        if "{}" in prompt:
            prompt = prompt.replace("{}", subject)
        target = str(row["target_new"]["str"] if isinstance(row["target_new"], dict) else row["target_new"]).strip()
        case = EditCase(f"{prompt} {target}", subject, "cf:" + prompt.replace(subject, "{}"), target, "counterfact")
        case.questions.append((prompt, "cf_prompt"))
        reph = row.get("rephrase_prompt")
        for r in [reph] if isinstance(reph, str) else (reph or []):
            if r and r.strip() != prompt:
                case.questions.append((r.strip(), "cf_rephrase"))
        loc = row.get("locality_prompt")
        for q in [loc] if isinstance(loc, str) else (loc or []):
            if q:
                case.near_misses.append((q.strip(), "cf_locality"))
        cases.append(case)
    return cases


def load_zsre(path: Path, limit: int | None = None) -> list[EditCase]:
    """zsRE (KnowEdit format) requests as edits ``prompt + target_new`` with their probes."""
    cases = []
    for row in _read_jsonl(path):
        if limit is not None and len(cases) >= limit:
            break
        subject, prompt = str(row["subject"]), str(row["prompt"]).strip()
        target = str(row["target_new"]).strip()
        relation = "zsre:" + (prompt.replace(subject, "{}") if subject in prompt else prompt)
        case = EditCase(f"{prompt} {target}", subject, relation, target, "zsre")
        case.questions.append((prompt, "zsre_prompt"))
        reph = str(row.get("rephrase_prompt") or "").strip()
        if reph and reph != prompt:
            case.questions.append((reph, "zsre_rephrase"))
        for probe in (row.get("locality") or {}).get("Relation_Specificity", []):
            if probe.get("prompt"):
                text = str(probe["prompt"]).strip()
                # KnowEdit's Relation_Specificity probes sometimes ask the edited relation itself
                # ("The record label of X is" for "What is X's record label?"): not a near miss
                if asks_same_relation(text, prompt, subject):
                    case.dropped_near_misses += 1
                else:
                    case.near_misses.append((text, "zsre_locality"))
        for probes in (row.get("portability") or {}).values():
            for probe in probes:
                if probe.get("prompt"):
                    case.eval_only.append((str(probe["prompt"]).strip(), "zsre_portability"))
        cases.append(case)
    return cases


def asks_same_relation(probe: str, edit_prompt: str, subject: str) -> bool:
    """Whether ``probe`` asks the relation of ``edit_prompt``: they share a content word outside ``subject``.

    The rule for KnowEdit's mislabelled locality probes, used by the classifier's
    training (dropped as near misses) and by the evaluation (set aside).
    """
    return bool(_relation_words(probe, subject) & _relation_words(edit_prompt, subject))


def _relation_words(text: str, subject: str) -> set[str]:
    """Stems of the content words of ``text`` outside ``subject``: the words that name the relation."""
    from .scope import _analyse

    return set(_analyse(mask_name(text, subject, " ")).content)


def load_cases(files: dict[str, Path], limit: int | None = None) -> list[EditCase]:
    """All edit cases from the three sources; an edit text that appears twice keeps its first record."""
    cases = (
        load_edit_questions(files["edit_questions"], files["cloze_templates"], limit)
        + load_counterfact(files["counterfact"], limit)
        + load_zsre(files["zsre"], limit)
    )
    unique: dict[str, EditCase] = {}
    for c in cases:
        unique.setdefault(c.text, c)
    return list(unique.values())


def split_cases(cases: Sequence[EditCase], seed: int, fractions: Sequence[float],
                data_split: Any = None) -> dict[str, list[EditCase]]:
    """Assign subject groups to train / calibration / test.

    The project's tune / report split (:mod:`memedit.eval.splits`) decides
    first: every edit whose subject is on the *report* side is ``test`` (never
    trained, calibrated or chosen on), and the tune side's subject groups are
    shared between ``train`` and ``calibration`` in the ratio
    ``fractions[0] : fractions[1]`` by a seeded permutation.
    """
    from .eval.splits import default_split

    split = data_split if data_split is not None else default_split()
    tune_groups = sorted({c.group for c in cases if split.side_of_subject(c.subject) == "tune"})
    order = list(tune_groups)
    random.Random(seed).shuffle(order)
    cut = int(round(fractions[0] / (fractions[0] + fractions[1]) * len(order)))
    where = {g: ("train" if i < cut else "calibration") for i, g in enumerate(order)}
    out: dict[str, list[EditCase]] = {s: [] for s in SPLITS}
    for c in cases:
        out["test" if split.side_of_subject(c.subject) == "report" else where[c.group]].append(c)
    return out


# --------------------------------------------------------------------------- questions and pairs


@dataclass
class _Question:
    text: str
    kind: str
    positives: set[int]  # indices of the split's edits this question is in scope for
    entity: str | None = None  # for generic entity questions
    own: int | None = None  # for near misses: the edit they are a near miss of


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    return text[0].lower() + text[1:] if first.lower() in {"who", "what", "which", "where", "when", "how", "in", "at",
                                                            "whom", "whose", "why", "is", "are", "was", "did", "does"} else text


def _split_questions(cases: Sequence[EditCase], cfg: ScopeTrainConfig, rng: random.Random) -> list[_Question]:
    """Every question of one split with the edits it is in scope for."""
    questions: list[_Question] = []
    by_subject: dict[str, list[int]] = defaultdict(list)
    by_object: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cases):
        by_subject[_norm(c.subject)].append(i)
        by_object[_norm(c.obj)].append(i)
        for text, kind in c.questions:
            questions.append(_Question(text, kind, {i}))
        for text, kind in c.near_misses:
            questions.append(_Question(text, kind, set(), own=i))
        for text, kind in c.eval_only:
            questions.append(_Question(text, kind, {i}))
    # generic questions about one entity: every object, a share of the subjects
    entities: dict[str, str] = {}
    for c in cases:
        entities.setdefault(_norm(c.obj), c.obj)
    for c in cases:
        key = _norm(c.subject)
        if key not in entities and rng.random() < cfg.subject_generic_fraction:
            entities[key] = c.subject
    for key in sorted(entities):
        name = entities[key]
        if len(key.strip()) < 2:
            continue
        pos = set(by_subject.get(key, [])) | set(by_object.get(key, []))
        kind = "reverse" if by_object.get(key) else "subject_generic"
        questions.append(_Question(rng.choice(ENTITY_TEMPLATES).format(name), kind, pos, entity=name))
    # joined questions touching two edits with different subjects
    plain = [i for i, c in enumerate(cases) if c.source in ("edit_questions", "zsre") and c.questions]
    for _ in range(int(cfg.multi_edit_questions * len(cases)) if len(plain) > 1 else 0):
        a, b = rng.sample(plain, 2)
        if cases[a].group == cases[b].group:
            continue
        qa, qb = rng.choice(cases[a].questions)[0], rng.choice(cases[b].questions)[0]
        text = rng.choice(JOIN_TEMPLATES).format(a=qa.rstrip("?. "), b=_lower_first(qb))
        questions.append(_Question(text, "multi_edit", {a, b}))
    return questions


_RELATION_KNOWN = ("edit_questions", "counterfact")

# Wikidata relations (the MQuAKE inventory behind edit-questions.jsonl) whose questions overlap in
# meaning: a question about one may well be in scope of an edit of another ("Who is the author of
# X?" vs "X was created by Y"), so such same-subject pairs are left unlabelled, never negatives.
NEAR_SYNONYM_RELATIONS: tuple[frozenset[str], ...] = tuple(frozenset(g) for g in (
    {"P50", "P170", "P178", "P176", "P112", "P175", "P1037", "P127"},  # author / creator / developer / maker / founder
    {"P407", "P364", "P37", "P1412"},  # languages
    {"P17", "P131", "P276", "P30", "P495", "P27", "P740", "P159"},  # countries and locations
    {"P108", "P937", "P463", "P69"},  # employer / work place / membership / school
    {"P488", "P169", "P6", "P35", "P1308", "P286"},  # heads and officeholders
    {"P106", "P800"},  # occupation / famous for
    {"P641", "P413"},  # sport / position
))


def _related_relations(a: str, b: str) -> bool:
    return a == b or any(a in g and b in g for g in NEAR_SYNONYM_RELATIONS)


def _negative_kind(q: _Question, b: int, cases: Sequence[EditCase], default: str) -> str | None:
    """How edit ``b`` relates to question ``q``: a negative kind, ``"same_fact"`` (positive), or None (skip)."""
    if b in q.positives:
        return None
    eb = cases[b]
    qn = _norm(q.text)
    if q.entity is not None:
        return None if _norm(q.entity) in _norm(eb.text) else default
    if not q.positives:  # a near miss of another edit: only a clear non-mention is safe to call negative
        return None if (_norm(eb.subject) in qn or _norm(eb.obj) in qn) else default
    pos = [cases[i] for i in q.positives]
    subj = {_norm(c.subject) for c in pos}
    rels = {c.relation for c in pos}
    if (_norm(eb.subject), eb.relation) in {(_norm(c.subject), c.relation) for c in pos}:
        return "same_fact"
    if _norm(eb.subject) in subj or _norm(eb.subject) in qn:
        # relations are only comparable inside one source with known relation ids; zsRE words one
        # relation many ways, so its same-subject edits are mostly the same fact
        comparable = eb.source in _RELATION_KNOWN and all(c.source == eb.source for c in pos)
        distinct = not any(_related_relations(eb.relation, r) for r in rels)
        return "same_subject" if comparable and distinct else None
    if _norm(eb.obj) in qn:
        return "object_other_relation" if _norm(eb.obj) in subj else None
    if eb.relation in rels:
        return "same_relation"
    return default


def build_pairs(
    cases: Sequence[EditCase],
    split: str,
    cfg: ScopeTrainConfig,
    embed: "EmbeddingCache",
    include_eval_only: bool = False,
    progress: bool = False,
) -> PairSet:
    """All labelled pairs of one split (the split's own seeded RNG keeps splits independent)."""
    rng = random.Random(f"{cfg.seed}:{split}")
    questions = _split_questions(cases, cfg, rng)
    if not include_eval_only:
        questions = [q for q in questions if q.kind not in EVAL_ONLY_KINDS]
    n_edits = len(cases)
    by_subject: dict[str, list[int]] = defaultdict(list)
    by_relation: dict[str, list[int]] = defaultdict(list)
    by_object: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cases):
        by_subject[_norm(c.subject)].append(i)
        by_relation[c.relation].append(i)
        by_object[_norm(c.obj)].append(i)

    e_vecs = embed.encode([c.text for c in cases], progress=progress, desc=f"embed {split} edits")
    q_vecs = embed.encode([q.text for q in questions], progress=progress, desc=f"embed {split} questions")
    pairs: dict[tuple[int, int], str] = {}  # (question index, edit index) -> kind

    def add(qi: int, b: int, kind: str) -> bool:
        if (qi, b) in pairs:
            return False
        pairs[(qi, b)] = kind
        return True

    def try_negative(qi: int, b: int, default: str) -> bool:
        kind = _negative_kind(questions[qi], b, cases, default)
        if kind is None:
            return False
        return add(qi, b, kind)

    chunk = 1024
    for start in range(0, len(questions), chunk):
        sims = q_vecs[start:start + chunk] @ e_vecs.T
        k = min(cfg.neg_retrieved + 8, n_edits)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n_edits else np.tile(np.arange(n_edits), (len(sims), 1))
        for row, qi in enumerate(range(start, min(start + chunk, len(questions)))):
            q = questions[qi]
            for b in q.positives:
                kind = q.kind
                if q.entity is not None:
                    kind = "reverse" if _norm(cases[b].obj) == _norm(q.entity) else "subject_generic"
                add(qi, b, kind)
            if q.own is not None:
                add(qi, q.own, q.kind)
            if q.kind in EVAL_ONLY_KINDS:
                continue
            taken = 0
            for _ in range(cfg.neg_easy * 3):  # easy: random edits
                if taken >= cfg.neg_easy:
                    break
                taken += try_negative(qi, rng.randrange(n_edits), "easy")
            pos = [cases[i] for i in q.positives]
            if q.entity is None and pos:
                cands = [b for c in pos for b in by_subject[_norm(c.subject)] if b not in q.positives]
                rng.shuffle(cands)
                taken = 0
                for b in cands:
                    if taken >= cfg.neg_same_subject:
                        break
                    taken += try_negative(qi, b, "easy")
                cands = [b for c in pos for b in by_relation[c.relation] if b not in q.positives]
                taken = 0
                for b in rng.sample(cands, min(len(cands), 4 * cfg.neg_same_relation)):
                    if taken >= cfg.neg_same_relation:
                        break
                    taken += try_negative(qi, b, "easy")
                # edits whose object is this question's subject: the object asked about in another relation
                cands = [b for c in pos for b in by_object.get(_norm(c.subject), []) if b not in q.positives]
                for b in rng.sample(cands, min(len(cands), cfg.neg_object_other_relation)):
                    try_negative(qi, b, "easy")
            ranked = top[row][np.argsort(-sims[row, top[row]])]
            taken = 0
            for b in ranked:
                if taken >= cfg.neg_retrieved:
                    break
                b = int(b)
                if b in q.positives or (qi, b) in pairs:
                    continue
                taken += try_negative(qi, b, "retrieved")
    keys = list(pairs)
    labels = np.array([1.0 if pairs[k] in POSITIVE_KINDS or pairs[k] in EVAL_ONLY_KINDS else 0.0 for k in keys],
                      dtype=np.float32)

    out = PairSet(
        questions=[questions[qi].text for qi, _ in keys],
        edits=[cases[b].text for _, b in keys],
        labels=labels,
        kinds=[pairs[k] for k in keys],
        split=split,
    )
    if split == "train":
        extra = _masked_pairs(questions, cases, pairs, cfg, rng, by_subject) if cfg.mask_augment > 0 else []
        extra += _synthetic_same_subject(questions, cases, cfg, rng)
        out.questions += [q for q, _, _ in extra]
        out.edits += [e for _, e, _ in extra]
        out.kinds += [k for _, _, k in extra]
        out.labels = np.concatenate([out.labels, np.array([k in POSITIVE_KINDS for _, _, k in extra], np.float32)])
    return out


def _synthetic_same_subject(
    questions: Sequence[_Question], cases: Sequence[EditCase], cfg: ScopeTrainConfig, rng: random.Random
) -> list[tuple[str, str, str]]:
    """Questions about an edit's subject vs a generated edit of the same subject in another relation.

    The other relation is drawn from those that share a subject with the
    edit's relation somewhere in the split (so a person gets a person's
    relation: born in / died in / worked in), filled from its cloze template
    with an object seen for that relation. Same-subject near misses are the
    hardest kind and the data hold few; this adds more without new labels.
    """
    if cfg.synthetic_same_subject <= 0:
        return []
    by_subject: dict[str, set[str]] = defaultdict(set)
    objects: dict[str, list[str]] = defaultdict(list)
    template: dict[str, str] = {}
    for c in cases:
        if c.template:
            by_subject[_norm(c.subject)].add(c.relation)
            objects[c.relation].append(c.obj)
            template[c.relation] = c.template
    related: dict[str, set[str]] = defaultdict(set)
    for rels in by_subject.values():
        for r in rels:
            related[r] |= rels
    own_questions: dict[int, list[str]] = defaultdict(list)
    for q in questions:
        if q.kind == "question" and len(q.positives) == 1:
            i = next(iter(q.positives))
            if _norm(cases[i].subject) in _norm(q.text):
                own_questions[i].append(q.text)
    extra = []
    for i, c in enumerate(cases):
        if not c.template or not own_questions.get(i):
            continue
        choices = sorted(r for r in related[c.relation] - by_subject[_norm(c.subject)]
                         if not _related_relations(r, c.relation))
        if not choices:
            continue
        r = rng.choice(choices)
        edit = template[r].replace("[X]", c.subject).replace("__", rng.choice(objects[r]))
        for q in rng.sample(own_questions[i], min(cfg.synthetic_same_subject, len(own_questions[i]))):
            extra.append((q, edit, "synthetic_same_subject"))
    return extra


_MASKABLE = ("question", "cf_prompt", "cf_rephrase", "zsre_prompt", "zsre_rephrase")


def mask_name(text: str, name: str, placeholder: str = MASK_WORDS[0]) -> str:
    """``text`` with every whole-word, case-insensitive occurrence of ``name`` replaced by ``placeholder``."""
    if not name.strip():
        return text
    return re.sub(r"(?<!\w)" + re.escape(name) + r"(?!\w)", placeholder, text, flags=re.IGNORECASE)


def _masked_pairs(
    questions: Sequence[_Question],
    cases: Sequence[EditCase],
    pairs: dict[tuple[int, int], str],
    cfg: ScopeTrainConfig,
    rng: random.Random,
    by_subject: dict[str, list[int]],
) -> list[tuple[str, str, str]]:
    """Subject-free copies of some positives, with subject-free negatives of other relations.

    Real edits need not name an entity ("The most handsome person in the
    world is ..."), and their paraphrases share no words with them. Hiding the
    shared subject behind "someone" on both sides yields such pairs from the
    data; negatives pair the same masked question with masked edits of other
    relations (the subject's other edits, and a random edit), never with edits
    of the same relation, which would become the same question.
    """
    extra: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()

    def push(q: str, e: str, kind: str) -> None:
        if (q, e) not in seen:
            seen.add((q, e))
            extra.append((q, e, kind))

    for (qi, b), kind in pairs.items():
        c = cases[b]
        if kind not in _MASKABLE or rng.random() >= cfg.mask_augment:
            continue
        q = questions[qi].text
        if _norm(c.subject) not in _norm(q) or _norm(c.subject) not in _norm(c.text) or len(_norm(c.subject)) < 4:
            continue
        word = rng.choice(cfg.mask_words)
        mq = mask_name(q, c.subject, word)
        if _norm(c.obj) in _norm(mq):
            continue
        push(mq, mask_name(c.text, c.subject, word), "masked_positive")
        others = [o for o in by_subject[_norm(c.subject)] if o != b and not _related_relations(cases[o].relation, c.relation)
                  and cases[o].source == c.source and c.source in _RELATION_KNOWN]
        for o in rng.sample(others, min(len(others), 1)):
            push(mq, mask_name(cases[o].text, c.subject, word), "masked_negative")
        for _ in range(3):
            o = rng.randrange(len(cases))
            if (not _related_relations(cases[o].relation, c.relation) and cases[o].source in _RELATION_KNOWN
                    and c.source in _RELATION_KNOWN):
                push(mq, mask_name(cases[o].text, cases[o].subject, word), "masked_negative")
                break
    return extra


# --------------------------------------------------------------------------- embeddings with a cache


class EmbeddingCache:
    """Embeds each distinct text once per run, optionally persisting vectors under ``cache_dir``.

    The on-disk cache is a ``.npy`` matrix plus a JSON list of texts (no
    pickle), keyed by embedder name.
    """

    def __init__(self, embedder: Any, cache_dir: Path | None = None, chunk: int = 256):
        self.embedder = embedder
        self.chunk = chunk
        self._index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []
        self._new = 0
        self.path: Path | None = None
        if cache_dir is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.name)
            self.path = Path(cache_dir) / f"scope-embeddings-{slug}"
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        npy, txt = self.path.with_suffix(".npy"), self.path.with_suffix(".json")
        if not (npy.is_file() and txt.is_file()):
            return
        try:
            texts = json.loads(txt.read_text(encoding="utf-8"))
            mat = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable embedding cache %s: %s", self.path, exc)
            return
        if mat.ndim != 2 or mat.shape != (len(texts), self.embedder.dim):
            log.warning("ignoring embedding cache %s: shape %s does not fit", self.path, mat.shape)
            return
        self._rows = [mat]
        self._index = {t: i for i, t in enumerate(texts)}

    def save(self) -> None:
        """Persist the vectors if a cache directory was given and anything new was embedded."""
        if self.path is None or not self._new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mat = self._matrix()
        texts = [None] * len(self._index)
        for t, i in self._index.items():
            texts[i] = t
        tmp = self.path.with_suffix(".tmp.npy")
        np.save(tmp, mat, allow_pickle=False)
        tmp.replace(self.path.with_suffix(".npy"))
        self.path.with_suffix(".json").write_text(json.dumps(texts), encoding="utf-8")
        self._new = 0

    def _matrix(self) -> np.ndarray:
        if len(self._rows) > 1:
            self._rows = [np.concatenate(self._rows, axis=0)]
        return self._rows[0] if self._rows else np.zeros((0, self.embedder.dim), dtype=np.float32)

    def rows(self, texts: Sequence[str], progress: bool = False, desc: str = "embed") -> tuple[np.ndarray, np.ndarray]:
        """``(matrix, row indices)``: ``matrix[idx[i]]`` is the vector of ``texts[i]`` (no copies per pair)."""
        self.encode([], progress=progress, desc=desc) if not texts else self.encode(list(dict.fromkeys(texts)), progress, desc)
        return self._matrix(), np.array([self._index[t] for t in texts], dtype=np.int64)

    def encode(self, texts: Sequence[str], progress: bool = False, desc: str = "embed") -> np.ndarray:
        """``(len(texts), dim)`` unit vectors, embedding only texts not seen before."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._index))
        if missing:
            from tqdm.auto import tqdm

            with tqdm(total=len(missing), desc=desc, unit="text", disable=not progress) as bar:
                for s in range(0, len(missing), self.chunk):
                    part = missing[s:s + self.chunk]
                    vecs = self.embedder.encode(part)
                    base = sum(len(r) for r in self._rows)
                    self._rows.append(np.asarray(vecs, dtype=np.float32))
                    for j, t in enumerate(part):
                        self._index[t] = base + j
                    self._new += len(part)
                    bar.update(len(part))
                    if self._new >= 16 * self.chunk:  # keep long first runs resumable
                        self.save()
            self.save()
        mat = self._matrix()
        return mat[[self._index[t] for t in texts]] if len(texts) else np.zeros((0, mat.shape[1]), np.float32)


# --------------------------------------------------------------------------- metrics


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None without both classes."""
    labels = np.asarray(labels) > 0.5
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = np.asarray(scores)[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ece_score(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error over equal-width probability bins."""
    labels, probs = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return 0.0
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(probs[m].mean() - labels[m].mean())
    return float(ece)


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1, AUC, ECE, accuracy and counts at ``threshold``."""
    y = np.asarray(labels) > 0.5
    pred = np.asarray(probs) >= threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    tn = int((~pred & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if precision is not None and recall is not None else None)
    return {
        "n": int(len(y)),
        "n_pos": int(y.sum()),
        "n_neg": int((~y).sum()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_positive_rate": fp / (fp + tn) if fp + tn else None,
        "accuracy": (tp + tn) / len(y) if len(y) else None,
        "auc": auc_score(y, probs),
        "ece": ece_score(y, probs),
    }


def report(pairs: PairSet, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """Overall metrics, then per negative kind (all positives + that kind) and per positive kind (recall)."""
    y = pairs.labels
    kinds = np.array(pairs.kinds)
    out: dict[str, Any] = {"overall": binary_metrics(y, probs, threshold), "negatives": {}, "positives": {}}
    pos_mask = y > 0.5
    trained_pos = pos_mask & ~np.isin(kinds, EVAL_ONLY_KINDS)
    out["overall"] = binary_metrics(y[~np.isin(kinds, EVAL_ONLY_KINDS)], probs[~np.isin(kinds, EVAL_ONLY_KINDS)],
                                    threshold)
    for kind in NEGATIVE_KINDS:
        m = kinds == kind
        if m.any():
            sub = m | trained_pos
            out["negatives"][kind] = binary_metrics(y[sub], probs[sub], threshold)
    neg_mask = ~pos_mask
    for kind in POSITIVE_KINDS + EVAL_ONLY_KINDS:
        m = kinds == kind
        if m.any():
            # precision of one positive kind against every negative says little: recall, AUC, ECE only
            full = binary_metrics(y[m | neg_mask], probs[m | neg_mask], threshold)
            out["positives"][kind] = {**full, "precision": None, "f1": None, "false_positive_rate": None,
                                      "accuracy": None, "n_neg": None, "n": full["n_pos"],
                                      "ece": ece_score(y[m], probs[m])}
    return out


# --------------------------------------------------------------------------- training


@dataclass
class PairArrays:
    """What the MLP trains on: a shared vector matrix, row indices per pair, lexical features, labels."""

    matrix: np.ndarray
    q_idx: np.ndarray
    e_idx: np.ndarray
    lex: np.ndarray
    labels: np.ndarray
    kinds: tuple[str, ...] = ()

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        return self.matrix[self.q_idx], self.matrix[self.e_idx]


def pair_arrays(pairs: PairSet, embed: EmbeddingCache) -> PairArrays:
    """Vectors (as rows of the cache's matrix) and lexical features of a pair set."""
    embed.encode(list(dict.fromkeys(pairs.questions + pairs.edits)))
    matrix, q_idx = embed.rows(pairs.questions)
    _, e_idx = embed.rows(pairs.edits)
    cos = np.einsum("ij,ij->i", matrix[q_idx], matrix[e_idx])
    lex = lexical_feature_matrix(pairs.questions, pairs.edits, cos)
    return PairArrays(matrix, q_idx, e_idx, lex, pairs.labels, tuple(pairs.kinds))


def fit_mlp(data: PairArrays, cfg: ScopeTrainConfig, progress: bool = False) -> dict[str, np.ndarray]:
    """Train the MLP with class-balanced BCE; returns NumPy weights named as :data:`memedit.scope.WEIGHT_NAMES`."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    lex, y = data.lex, data.labels
    lex_mean = lex.mean(axis=0)
    lex_std = lex.std(axis=0) + 1e-3
    dim = data.matrix.shape[1]
    n_in = dim * len(cfg.embedding_parts) + lex.shape[1]
    h1, h2 = cfg.hidden
    model = nn.Sequential(
        nn.Dropout(cfg.dropout), nn.Linear(n_in, h1), nn.GELU(approximate="tanh"), nn.Dropout(cfg.dropout),
        nn.Linear(h1, h2), nn.GELU(approximate="tanh"), nn.Linear(h2, 1),
    )
    mat = torch.from_numpy(np.ascontiguousarray(data.matrix, dtype=np.float32))
    qi, ei = torch.from_numpy(data.q_idx), torch.from_numpy(data.e_idx)
    lt = torch.from_numpy(((lex - lex_mean) / lex_std).astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    n_pos = float(y.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - n_pos) / max(n_pos, 1.0)), reduction="none")
    # Questions that ask the edit in other words are the positives the classifier misses most (the
    # calibration split's rephrase recall trails the rest), so they may weigh more in the loss.
    sample_w = torch.ones(len(y))
    if cfg.paraphrase_weight != 1.0 and data.kinds:
        sample_w[torch.tensor([k in PARAPHRASE_KINDS for k in data.kinds])] = float(cfg.paraphrase_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = (len(y) + cfg.batch_size - 1) // cfg.batch_size
    steps = max(cfg.epochs * per_epoch, 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)

    def batch_x(idx: torch.Tensor) -> torch.Tensor:
        u, v = mat[qi[idx]], mat[ei[idx]]
        table = {"u*v": lambda: u * v, "|u-v|": lambda: (u - v).abs(), "u": lambda: u, "v": lambda: v}
        return torch.cat([table[p]() for p in cfg.embedding_parts] + [lt[idx]], dim=1)

    model.train()
    with tqdm(total=steps, desc="train scope MLP", unit="step", disable=not progress) as bar:
        for epoch in range(cfg.epochs):
            perm = torch.randperm(len(y), generator=gen)
            total = 0.0
            for s in range(0, len(y), cfg.batch_size):
                idx = perm[s:s + cfg.batch_size]
                loss = (loss_fn(model(batch_x(idx))[:, 0], yt[idx]) * sample_w[idx]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / len(y):.4f}")
            log.info("scope MLP epoch %d: loss %.4f", epoch + 1, total / len(y))
    lin = [m for m in model if isinstance(m, nn.Linear)]
    w = {"lex_mean": lex_mean.astype(np.float32), "lex_std": lex_std.astype(np.float32)}
    for k, layer in enumerate(lin, 1):
        w[f"w{k}"] = layer.weight.detach().numpy().T.copy()
        w[f"b{k}"] = layer.bias.detach().numpy().copy()
    return w


def fit_platt(logits: np.ndarray, labels: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """Platt scaling ``sigmoid(a * z + b)``: Newton steps with backtracking on the log loss (a > 0 kept)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)

    def loss(a: float, b: float) -> float:
        t = a * z + b
        return float(np.mean(np.logaddexp(0.0, t) - y * t))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iters):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * z + b)))
        g = np.array([((p - y) * z).mean(), (p - y).mean()])
        w = p * (1 - p)
        hess = np.array([[(w * z * z).mean(), (w * z).mean()], [(w * z).mean(), w.mean()]]) + 1e-8 * np.eye(2)
        step = np.linalg.solve(hess, g)
        scale = 1.0
        while scale > 1e-6:
            na, nb = a - scale * step[0], b - scale * step[1]
            if na > 0 and loss(na, nb) <= current:
                break
            scale /= 2
        else:
            break
        new = loss(na, nb)
        a, b, done = na, nb, current - new < 1e-12
        current = new
        if done:
            break
    return float(a), float(b)


def choose_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probability threshold with the best F1 on ``labels`` (mid-point between neighbouring scores)."""
    y = np.asarray(labels) > 0.5
    order = np.argsort(-probs, kind="mergesort")
    p_sorted, y_sorted = probs[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    f1 = 2 * tp / (tp + fp + y.sum())
    # only cut between distinct scores
    valid = np.r_[p_sorted[1:] < p_sorted[:-1], True]
    f1 = np.where(valid, f1, -1)
    i = int(np.argmax(f1))
    nxt = p_sorted[i + 1] if i + 1 < len(p_sorted) else 0.0
    thr = float((p_sorted[i] + nxt) / 2)
    return float(min(max(thr, 1e-4), 1 - 1e-4))


def _kind_counts(pairs: PairSet) -> dict[str, Any]:
    return {"pairs": len(pairs), "positives": int(pairs.labels.sum()), "negatives": int(len(pairs) - pairs.labels.sum()),
            "by_kind": pairs.counts()}


def _files_record(files: dict[str, Path]) -> dict[str, Any]:
    out = {}
    for key, path in files.items():
        data = path.read_bytes()
        out[key] = {"name": str(Path(*path.parts[-2:])), "sha256": hashlib.sha256(data).hexdigest()[:16],
                    "lines": data.count(b"\n")}
    return out


def _split_record(split: Any) -> dict[str, Any]:
    return dict(split.record(), test_is="report side", train_and_calibration_are="tune side")


@dataclass
class ScopeData:
    """Everything generated from the data files for one seed: edits per split and their labelled pairs."""

    files: dict[str, Path]
    splits: dict[str, list[EditCase]]
    pairs: dict[str, PairSet]
    embedder_name: str
    embedder_dim: int
    split: Any = None  # the tune / report DataSplit the edits were assigned with


def _embedding_cache(emb: Any, cache_dir: str | Path | None) -> EmbeddingCache:
    if cache_dir == "default":
        from .config import cache_dir as memedit_cache_dir

        cache_dir = memedit_cache_dir()
    return EmbeddingCache(emb, Path(cache_dir) if cache_dir else None)


def prepare_scope_data(
    data_dir: str | Path | None,
    cfg: ScopeTrainConfig,
    embed: EmbeddingCache,
    progress: bool = False,
    **file_overrides: str | Path | None,
) -> ScopeData:
    """Read the files, split edits by subject, build every split's pairs (embedding what is needed)."""
    files = resolve_data_files(data_dir, **file_overrides)
    from .eval.splits import DataSplit, default_split

    cases = load_cases(files, cfg.max_edits_per_source)
    data_split = DataSplit.for_data_dir(data_dir) if data_dir is not None else default_split()
    splits = split_cases(cases, cfg.seed, cfg.split_fractions, data_split)
    log.info("scope data: %d edits -> %s", len(cases), {s: len(v) for s, v in splits.items()})
    pairs = {s: build_pairs(splits[s], s, cfg, embed, include_eval_only=(s == "test"), progress=progress)
             for s in SPLITS}
    for s in SPLITS:
        if len(pairs[s]) == 0 or pairs[s].labels.min() == pairs[s].labels.max():
            raise MemeditError(f"the {s} split has no pairs of both classes; give more data")
    return ScopeData(files, splits, pairs, embed.embedder.name, int(embed.embedder.dim), data_split)


def _probabilities(clf: ScopeClassifier, arrays: PairArrays, calibrated: bool = True, chunk: int = 8192) -> np.ndarray:
    """Logits (or calibrated probabilities) of precomputed pair arrays, in chunks."""
    parts = tuple(clf.meta["features"]["embedding_parts"])
    out = []
    for s in range(0, len(arrays.labels), chunk):
        sl = slice(s, s + chunk)
        u, v = arrays.matrix[arrays.q_idx[sl]], arrays.matrix[arrays.e_idx[sl]]
        lex = (arrays.lex[sl] - clf.weights["lex_mean"]) / clf.weights["lex_std"]
        out.append(clf.logits(np.concatenate([embedding_features(u, v, parts), lex], axis=1)))
    z = np.concatenate(out) if out else np.zeros(0)
    return clf.calibrate(z) if calibrated else z


def fit_scope_classifier(data: ScopeData, cfg: ScopeTrainConfig, embed: EmbeddingCache,
                         progress: bool = False) -> tuple[ScopeClassifier, dict[str, Any]]:
    """Fit the MLP on train, Platt scaling and the threshold on calibration; report calibration and test."""
    t0 = time.perf_counter()
    train = pair_arrays(data.pairs["train"], embed)
    held = {s: pair_arrays(data.pairs[s], embed) for s in ("calibration", "test")}
    weights = fit_mlp(train, cfg, progress)
    fit_s = time.perf_counter() - t0
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": "memedit-scope-classifier",
        "memedit_version": memedit_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "embedder": {"name": data.embedder_name, "dim": data.embedder_dim, "normalized": True},
        "features": {
            "name": FEATURE_SET,
            "embedding_parts": list(cfg.embedding_parts),
            "lexical": list(LEXICAL_FEATURES),
            "model": f"MLP {len(cfg.embedding_parts) * data.embedder_dim + len(LEXICAL_FEATURES)}"
                     f"-{cfg.hidden[0]}-{cfg.hidden[1]}-1, GELU(tanh)",
        },
        "calibration": {"method": "platt", "platt_a": 1.0, "platt_b": 0.0, "threshold": 0.5,
                        "fitted_on": "calibration split", "threshold_rule": "max F1 on the calibration split"},
        "training": {"config": asdict(cfg), "data_files": _files_record(data.files),
                     "split": _split_record(data.split),
                     "edits": {s: len(data.splits[s]) for s in SPLITS},
                     "pairs": {s: _kind_counts(data.pairs[s]) for s in SPLITS},
                     "zsre_locality_dropped_as_same_relation": sum(c.dropped_near_misses for v in data.splits.values()
                                                                    for c in v)},
    }
    clf = ScopeClassifier(weights=weights, meta=meta)
    raw = {s: _probabilities(clf, held[s], calibrated=False) for s in held}
    a, b = fit_platt(raw["calibration"], data.pairs["calibration"].labels)
    meta["calibration"].update(platt_a=a, platt_b=b, temperature=1.0 / a)
    cal_probs = clf.calibrate(raw["calibration"])
    meta["calibration"]["threshold"] = choose_threshold(data.pairs["calibration"].labels, cal_probs)
    thr = clf.threshold
    metrics = {
        "threshold": thr,
        "calibration": report(data.pairs["calibration"], cal_probs, thr),
        "test": report(data.pairs["test"], clf.calibrate(raw["test"]), thr),
        "timing_s": {"fit": round(fit_s, 1)},
    }
    meta["metrics"] = {"split": "test", "threshold": thr, **metrics["test"],
                       "calibration_overall": metrics["calibration"]["overall"]}
    clf._validate()
    return clf, metrics


def train_scope_classifier(
    data_dir: str | Path | None = None,
    out_dir: str | Path = "out/scope",
    seed: int = 0,
    config: ScopeTrainConfig | None = None,
    embedder: Any = None,
    cache_dir: str | Path | None = "default",
    progress: bool = True,
    **file_overrides: str | Path | None,
) -> dict[str, Any]:
    """Generate pairs, train, calibrate, evaluate; write the artifact and ``scope-metrics.json`` to ``out_dir``.

    Returns the metrics dict (the ``test`` entry holds held-out results).
    ``cache_dir`` persists training-text embeddings between runs (``"default"``:
    memedit's cache directory; None: keep them in memory only).
    """
    from .embeddings import Embedder

    cfg = config or ScopeTrainConfig(seed=seed)
    cfg.seed = seed
    t0 = time.perf_counter()
    resolve_data_files(data_dir, **file_overrides)  # fail on a missing file before loading the embedder
    emb = embedder if embedder is not None else Embedder.shared()
    embed = _embedding_cache(emb, cache_dir)
    with torch_threads(cfg.threads) as n_threads:
        log.info("scope training with %d torch thread(s)", n_threads)
        data = prepare_scope_data(data_dir, cfg, embed, progress=progress, **file_overrides)
        t_data = time.perf_counter()
        clf, metrics = fit_scope_classifier(data, cfg, embed, progress=progress)
    metrics["timing_s"] = {"data_and_embeddings": round(t_data - t0, 1), "fit_and_calibrate": round(time.perf_counter() - t_data, 1),
                           "total": round(time.perf_counter() - t0, 1)}
    out = Path(out_dir)
    clf.save(out)
    (out / "scope-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    log.info("scope classifier written to %s (test F1 %.3f)", out, metrics["test"]["overall"]["f1"] or 0.0)
    return metrics


def evaluate_scope_classifier(
    model: ScopeClassifier | str | Path | None = None,
    data_dir: str | Path | None = None,
    split: str = "test",
    seed: int | None = None,
    embedder: Any = None,
    cache_dir: str | Path | None = "default",
    progress: bool = True,
    **file_overrides: str | Path | None,
) -> dict[str, Any]:
    """Metrics of a classifier on one split of the data, regenerated exactly as in training.

    ``split="all"`` evaluates on every edit of the files (for data the
    classifier was not trained on). ``seed`` defaults to the training seed
    recorded in the artifact, so ``"test"`` is the held-out split.
    """
    from .embeddings import Embedder

    clf = model if isinstance(model, ScopeClassifier) else ScopeClassifier.load(model)
    train_cfg = dict(clf.meta.get("training", {}).get("config", {}))
    cfg = ScopeTrainConfig(**{k: v for k, v in train_cfg.items() if k in ScopeTrainConfig.__dataclass_fields__})
    if seed is not None:
        cfg.seed = seed
    if split not in SPLITS + ("all",):
        raise ValidationError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
    files = resolve_data_files(data_dir, **file_overrides)
    emb = embedder if embedder is not None else Embedder.shared(clf.embedder_name)
    clf.check_embedder(emb.name, emb.dim)
    embed = _embedding_cache(emb, cache_dir)
    cases = load_cases(files, cfg.max_edits_per_source)
    from .eval.splits import DataSplit

    data_split = DataSplit.for_data_dir(data_dir) if data_dir is not None else None
    chosen = cases if split == "all" else split_cases(cases, cfg.seed, cfg.split_fractions, data_split)[split]
    with torch_threads(cfg.threads):
        pairs = build_pairs(chosen, "test" if split == "all" else split, cfg, embed, include_eval_only=True,
                            progress=progress)
        embed.encode(list(dict.fromkeys(pairs.questions + pairs.edits)))
    t0 = time.perf_counter()
    probs = clf.predict_proba(pairs.questions, pairs.edits, q_vecs=embed.encode(pairs.questions),
                              e_vecs=embed.encode(pairs.edits))
    elapsed = time.perf_counter() - t0
    rep = report(pairs, probs, clf.threshold)
    rep.update(split=split, threshold=clf.threshold, edits=len(chosen), pairs=_kind_counts(pairs),
               classify_ms_per_pair=round(1000 * elapsed / max(len(pairs), 1), 4))
    return rep


def iter_table_rows(rep: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(label, metrics) rows of a report, in display order."""
    yield "overall", rep["overall"]
    for kind, m in rep["negatives"].items():
        yield f"neg: {kind}", m
    for kind, m in rep["positives"].items():
        yield f"pos: {kind}", m
