"""Loaders for the CounterFact and zsRE/KnowEdit JSONL formats -> :class:`EvalCase`.

Every record becomes one fact edit, ``Edit.fact(subject, prompt-with-{},
target_new, target_true=...)``, where ``{}`` replaces the subject's first
verbatim occurrence in the prompt, and a list of probes:

* ``reliability``: the edit prompt itself (expects ``target_new``);
* ``generalization``: the rephrased prompt (expects ``target_new``);
* ``locality``: an unrelated prompt that must keep its unedited answer
  (``expected`` = the ground truth of that prompt);
* ``portability`` (zsRE only): questions that need the edited fact plus reasoning
  (``expected`` = their post-edit answers).

Records whose subject does not occur verbatim in the prompt cannot become
fact edits, and records whose ``target_new`` equals the old answer change
nothing; both are skipped and counted in :attr:`LoadResult.skipped`.
A missing file or a malformed line raises :class:`ValidationError` naming the
file and line.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..edits import Edit, subject_key
from ..errors import ValidationError

FORMATS = ("counterfact", "zsre")
PROBE_KINDS = ("reliability", "generalization", "locality", "portability")
IN_SCOPE_KINDS = ("reliability", "generalization", "portability")


@dataclass(frozen=True)
class Probe:
    """One question asked after the edit, with what a correct answer contains."""

    kind: str                      # one of PROBE_KINDS
    question: str
    #: answers that count as success for generation (target_new, or a locality/portability ground truth)
    expected: tuple[str, ...]
    #: for the probability test: the answer that should win, and the one it must beat (None: no test)
    prob_pos: str | None = None
    prob_neg: str | None = None
    sub_kind: str | None = None    # e.g. zsRE portability "Reasoning"

    @property
    def in_scope(self) -> bool:
        return self.kind in IN_SCOPE_KINDS


@dataclass(frozen=True)
class EvalCase:
    case_id: str
    source: str                    # "counterfact" | "zsre"
    edit: Edit
    probes: tuple[Probe, ...]


@dataclass
class LoadResult:
    path: str
    format: str
    cases: list[EvalCase]
    total: int = 0
    skipped: int = 0
    skipped_ids: list[str] = field(default_factory=list)
    #: zsRE locality probes set aside because they ask the edited relation of the edited subject
    same_relation_locality: int = 0


def _template(subject: str, prompt: str) -> str | None:
    i = prompt.find(subject)
    if i < 0:
        return None
    return prompt[:i] + "{}" + prompt[i + len(subject):]


def _str(rec: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    v = rec.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip():
        raise ValidationError(f"{where}: field {key!r} must be a non-empty string, got {v!r:.60}")
    return v.strip()


def _strs(v: Any, key: str, where: str) -> tuple[str, ...]:
    """A string or a list of strings (zsRE ground truths come both ways)."""
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x.strip() for x in items):
        raise ValidationError(f"{where}: field {key!r} must be a non-empty string or list of strings, got {v!r:.60}")
    return tuple(x.strip() for x in items)


def _read_jsonl(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"no data file at {p}")
    out = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {p}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(rec, dict):
            raise ValidationError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        out.append((where, rec))
    return out


def _make_edit(subject: str, prompt: str, target_new: str, target_true: str | None, where: str) -> Edit | None:
    tpl = _template(subject, prompt)
    if tpl is None:
        return None
    if target_true is not None and target_true.strip().casefold() == target_new.strip().casefold():
        return None  # a no-op edit (the "new" answer is the old one): nothing to evaluate
    try:
        return Edit.fact(subject, tpl, target_new, target_true=target_true, source=where)
    except ValidationError as exc:
        raise ValidationError(f"{where}: not a valid edit: {exc}") from exc


def load_counterfact(path: str | Path) -> LoadResult:
    """CounterFact records: prompt, subject, target_new, ground_truth, rephrase_prompt, locality_prompt, locality_ground_truth."""
    res = LoadResult(path=str(path), format="counterfact", cases=[])
    for where, rec in _read_jsonl(path):
        res.total += 1
        subject, prompt = _str(rec, "subject", where), _str(rec, "prompt", where)
        new, old = _str(rec, "target_new", where), _str(rec, "ground_truth", where)
        rephrase = _str(rec, "rephrase_prompt", where, required=False)
        loc_p = _str(rec, "locality_prompt", where, required=False)
        loc_gt = _str(rec, "locality_ground_truth", where, required=loc_p is not None)
        cid = str(rec.get("case_id", where.rsplit(":", 1)[1]))
        edit = _make_edit(subject, prompt, new, old, where)  # type: ignore[arg-type]
        if edit is None:
            res.skipped += 1
            res.skipped_ids.append(cid)
            continue
        probes = [Probe("reliability", prompt, (new,), new, old)]  # type: ignore[arg-type]
        if rephrase:
            probes.append(Probe("generalization", rephrase, (new,), new, old))  # type: ignore[arg-type]
        if loc_p:
            # CounterFact "neighborhood": the unedited answer must still beat the new target
            probes.append(Probe("locality", loc_p, (loc_gt,), loc_gt, new))  # type: ignore[arg-type]
        res.cases.append(EvalCase(cid, "counterfact", edit, tuple(probes)))
    return res


def same_relation(probe_question: str, edit_prompt: str, subject: str) -> bool:
    """Whether a locality probe asks the edited relation itself: they share a content word outside the subject.

    KnowEdit's zsRE ``Relation_Specificity`` probes are meant to ask the edited
    subject about *another* relation, but many ask the edited one in other words
    ("The constellation of Butterfly Cluster is" after "What constellation is home
    to Butterfly Cluster? -> Orion"), whose right answer after the edit is the new
    object. This is the rule the scope classifier's training already used to drop
    such probes (:func:`memedit.scope_train.asks_same_relation`).
    """
    from ..scope_train import asks_same_relation

    return asks_same_relation(probe_question, edit_prompt, subject)


def load_zsre(path: str | Path, *, keep_same_relation_locality: bool = False) -> LoadResult:
    """zsRE/KnowEdit records: subject, prompt, target_new, ground_truth[], rephrase_prompt, locality{}, portability{}.

    Locality probes that ask the edited relation itself (:func:`same_relation`)
    are set aside and counted in :attr:`LoadResult.same_relation_locality`,
    unless ``keep_same_relation_locality``.
    """
    res = LoadResult(path=str(path), format="zsre", cases=[])
    for where, rec in _read_jsonl(path):
        res.total += 1
        subject, prompt, new = _str(rec, "subject", where), _str(rec, "prompt", where), _str(rec, "target_new", where)
        old = _strs(rec.get("ground_truth"), "ground_truth", where)[0] if rec.get("ground_truth") else None
        rephrase = _str(rec, "rephrase_prompt", where, required=False)
        cid = str(rec.get("case_id", where.rsplit(":", 1)[1]))
        probes: list[Probe] = [Probe("reliability", prompt, (new,), new, old)]  # type: ignore[arg-type]
        if rephrase:
            probes.append(Probe("generalization", rephrase, (new,), new, old))  # type: ignore[arg-type]
        for field_name, kind in (("locality", "locality"), ("portability", "portability")):
            groups = rec.get(field_name) or {}
            if not isinstance(groups, dict):
                raise ValidationError(f"{where}: field {field_name!r} must be an object of lists")
            for sub, items in groups.items():
                if not isinstance(items, list):
                    raise ValidationError(f"{where}: {field_name}.{sub} must be a list")
                for j, item in enumerate(items):
                    w = f"{where} ({field_name}.{sub}[{j}])"
                    if not isinstance(item, dict):
                        raise ValidationError(f"{w}: expected an object with prompt and ground_truth")
                    q = _str(item, "prompt", w)
                    gts = _strs(item.get("ground_truth"), "ground_truth", w)
                    if kind == "locality":
                        if not keep_same_relation_locality and same_relation(q, prompt, subject):  # type: ignore[arg-type]
                            res.same_relation_locality += 1
                            continue
                        probes.append(Probe(kind, q, gts, gts[0], new, sub))  # type: ignore[arg-type]
                    else:
                        # a probability test needs a competitor: the old answer, when the expected one is the new target
                        neg = old if (old and any(g.casefold() == new.casefold() for g in gts)) else None
                        probes.append(Probe(kind, q, gts, gts[0] if neg else None, neg, sub))  # type: ignore[arg-type]
        edit = _make_edit(subject, prompt, new, old, where)  # type: ignore[arg-type]
        if edit is None:
            res.skipped += 1
            res.skipped_ids.append(cid)
            continue
        res.cases.append(EvalCase(cid, "zsre", edit, tuple(probes)))
    return res


def load_cases(path: str | Path, format: str, *, keep_same_relation_locality: bool = False) -> LoadResult:  # noqa: A002
    """Load ``path`` in ``format`` ("counterfact" or "zsre")."""
    if format not in FORMATS:
        raise ValidationError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "counterfact":
        return load_counterfact(path)
    return load_zsre(path, keep_same_relation_locality=keep_same_relation_locality)


def sample(cases: Sequence[EvalCase], n: int | None, seed: int = 0, *,
           distinct_subjects: bool = False) -> list[EvalCase]:
    """A fixed random subsample of ``n`` cases (all of them, in file order, if ``n`` is None or too big).

    ``distinct_subjects`` keeps at most one case per subject (the first one
    drawn), for batch mode: two records that edit the same subject often set
    the same relation to different objects ("USA-64 was launched on 3 December
    1992" and "... on 2 March 1992"), and no store holding both can answer both
    cases right. MEMIT's mass-editing evaluation drops such conflicts the same way.
    """
    if n is not None and n < 1:
        raise ValidationError("the sample size must be at least 1")
    if not distinct_subjects:
        if n is None or n >= len(cases):
            return list(cases)
        return [cases[i] for i in sorted(random.Random(seed).sample(range(len(cases)), n))]
    order = random.Random(seed).sample(range(len(cases)), len(cases))
    seen: set[str] = set()
    keep: list[int] = []
    for i in order:
        key = subject_key(cases[i].edit.subject or cases[i].edit.sentence())
        if key not in seen:
            seen.add(key)
            keep.append(i)
            if n is not None and len(keep) == n:
                break
    return [cases[i] for i in sorted(keep)]


def subjects_shared(cases: Sequence[EvalCase]) -> int:
    """How many of ``cases`` edit a subject that another of them edits too."""
    counts: dict[str, int] = {}
    for c in cases:
        key = subject_key(c.edit.subject or c.edit.sentence())
        counts[key] = counts.get(key, 0) + 1
    return sum(v for v in counts.values() if v > 1)
