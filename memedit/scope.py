"""The scope classifier: does a question touch a stored edit?

>>> from memedit.scope import ScopeClassifier
>>> clf = ScopeClassifier.load()                       # the packaged artifact
>>> edits = ["The current president of the US is Trump"]
>>> p = clf.predict_proba(["Who is Trump?"], edits)    # calibrated P(in scope), one per pair
>>> bool(p[0] >= clf.threshold)                        # doctest: +SKIP
True

SERAC-style: a small classifier scores (question, edit text) pairs. It sees the
two sentence embeddings (the same vectors the index stores) and a handful of
cheap lexical features that the embeddings blur: whether the question names
entities the edit does not, how much of each side's content words the other
covers, and *where* in the edit sentence the matched words sit (an edit's
object is usually its tail, so object-side questions such as "Who is Trump?"
match late, subject-side ones early). A two-layer MLP over those features gives
a logit; Platt scaling fitted on held-out edits turns it into a probability,
and ``threshold`` (chosen on the same held-out split) is the decision point.

Inference is NumPy only (two small matrix products), so scoring the ~5
candidate edits the index retrieves costs well under a millisecond once the
vectors exist. The artifact is ``scope-classifier.safetensors`` (weights) plus
``scope-classifier.json`` (metadata: embedder, feature spec, calibration,
threshold, training data, metrics); nothing is unpickled. Training lives in
:mod:`memedit.scope_train`.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import MemeditError

if TYPE_CHECKING:  # pragma: no cover
    from .embeddings import Embedder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ARTIFACT_STEM = "scope-classifier"
FEATURE_SET = "pair-mlp-v1"
EMBEDDING_PARTS: tuple[str, ...] = ("u*v", "|u-v|", "u", "v")
PACKAGED_DIR = Path(__file__).resolve().parent / "resources"


class ScopeArtifactError(MemeditError, ValueError):
    """A scope-classifier artifact is missing, corrupt, or does not fit the embedder in use."""


# --------------------------------------------------------------------------- lexical features

_STOPWORDS = frozenset(
    """
    a an the this that these those there here of in on at to for from by with about as into onto upon over under
    within without between among through during before after above below near per via than then and or nor but
    so if whether because while also too very just only even not no yes is are was were be been being am do does
    did done doing has have had having can could will would shall should may might must it its it's he him his
    she her hers they them their theirs we us our ours you your yours i me my mine who whom whose which what when
    where why how whatever whoever whichever one ones someone something anyone anything any some all each every
    both either neither other another such same own much many more most less least few several name named called
    tell know please s kind type sort
    """.split()
)
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
_POSSESSIVE_RE = re.compile(r"['\u2019]s\b", re.UNICODE)

LEXICAL_FEATURES: tuple[str, ...] = (
    "cosine",
    "content_q_covered",  # share of the question's content words found in the edit
    "content_e_covered",  # share of the edit's content words found in the question
    "content_q_unmatched",  # question content words absent from the edit (capped count / 5)
    "content_e_unmatched",  # edit content words absent from the question (capped count / 8)
    "q_has_entity",
    "e_has_entity",
    "entity_q_covered",  # share of the question's capitalised tokens present in the edit
    "entity_e_covered",  # share of the edit's capitalised tokens present in the question
    "entity_q_missing",  # question entity tokens absent from the edit (capped count / 3)
    "longest_common_run",  # longest shared run of tokens (capped / 6)
    "longest_common_run_q",  # the same, over the question's length
    "match_pos_mean",  # relative position in the edit of its matched content words
    "match_pos_min",
    "match_pos_max",
    "any_content_match",
    "edit_head_matched",  # the edit's first content word appears in the question
    "edit_tail_matched",  # the edit's last content word (usually in the object) appears in the question
    "relation_q_empty",  # the question has no content words besides names ("Who is Trump?")
    "relation_q_covered",  # share of the question's non-name content words found in the edit
    "relation_e_covered",  # share of the edit's non-name content words found in the question
    "q_length",
    "e_length",
)


def _stem(token: str) -> str:
    """A deliberately crude stem: lower case, cut to five characters (educated ~ education)."""
    return token[:5]


_CONNECTORS = frozenset({"of", "the", "and", "de", "del", "der", "van", "von", "la", "le", "du", "da", "for"})


@dataclass(frozen=True)
class _Text:
    tokens: tuple[str, ...]  # lower-cased word tokens, possessives dropped
    stems: frozenset[str]  # stems of all tokens
    content: tuple[str, ...]  # stems of the content words, in order
    content_pos: tuple[float, ...]  # relative position (0..1) of each content word in the sentence
    entities: frozenset[str]  # lower-cased capitalised / numeric tokens that are not stopwords
    runs: tuple[tuple[frozenset[str], frozenset[str]], ...]  # (tokens, initials) of multi-word names
    initials: frozenset[str]  # every run's initials ("united states of america" -> "us", "usa")


def _name_runs(raw: Sequence[str], keep: Sequence[bool]) -> list[tuple[frozenset[str], frozenset[str]]]:
    """Multi-word capitalised names and the acronyms their initials could form."""
    runs, cur = [], []

    def close() -> None:
        while cur and cur[-1][0] in _CONNECTORS:
            cur.pop()
        caps = [t for t in cur if t[0] not in _CONNECTORS]
        if len(caps) >= 2:
            letters = "".join(t[0][0] for t in caps)
            runs.append((frozenset(t[0] for t in caps), frozenset(letters[:k] for k in range(2, len(letters) + 1))))
        cur.clear()

    for t, k in zip(raw, keep):
        if k and t[0].isupper():
            cur.append((t.lower(),))
        elif cur and t.lower() in _CONNECTORS:
            cur.append((t.lower(),))
        else:
            close()
    close()
    return runs


@lru_cache(maxsize=131072)
def _analyse(text: str) -> _Text:
    raw = _TOKEN_RE.findall(_POSSESSIVE_RE.sub("", text))
    lower = tuple(t.lower() for t in raw)
    n = max(len(lower) - 1, 1)
    # an acronym is content even when its lower case is a stopword ("US", "IT")
    keep = [t.lower() not in _STOPWORDS or (len(t) > 1 and t.isupper()) for t in raw]
    content, pos = [], []
    for i, (t, k) in enumerate(zip(lower, keep)):
        if k:
            content.append(_stem(t))
            pos.append(i / n)
    entities = frozenset(t.lower() for t, k in zip(raw, keep) if k and (t[0].isupper() or t[0].isdigit()))
    runs = tuple(_name_runs(raw, keep))
    initials = frozenset(a for _, acr in runs for a in acr)
    return _Text(lower, frozenset(_stem(t) for t in lower), tuple(content), tuple(pos), entities, runs, initials)


def _entity_found(token: str, own: _Text, other: _Text) -> bool:
    """Is entity token ``token`` of ``own`` present in ``other`` (as a word, or via an acronym either way)?"""
    if _stem(token) in other.stems or token in other.initials:
        return True
    return any(token in run and not acr.isdisjoint(other.tokens) for run, acr in own.runs)


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best


def lexical_features(question: str, edit_text: str, cosine: float) -> list[float]:
    """The lexical features of one pair, in :data:`LEXICAL_FEATURES` order (all in [0, 1] or [-1, 1]).

    A side that names no entity counts as fully covered ("names nothing the
    other side lacks"), so entity-free paraphrases are judged on the rest.
    """
    q, e = _analyse(question), _analyse(edit_text)
    q_content, e_content = set(q.content), set(e.content)
    shared = q_content & e_content
    q_ent_found = sum(_entity_found(t, q, e) for t in q.entities)
    e_ent_found = sum(_entity_found(t, e, q) for t in e.entities)
    matched_pos = [p for c, p in zip(e.content, e.content_pos) if c in q_content]
    run = _longest_common_run(q.tokens, e.tokens)
    names = {_stem(t) for t in q.entities | e.entities}
    rel_q, rel_e = q_content - names, e_content - names  # the words that carry the relation
    rel_shared = len(rel_q & rel_e)
    return [
        float(cosine),
        len(shared) / len(q_content) if q_content else 0.0,
        len(shared) / len(e_content) if e_content else 0.0,
        min(len(q_content - e_content), 5) / 5,
        min(len(e_content - q_content), 8) / 8,
        1.0 if q.entities else 0.0,
        1.0 if e.entities else 0.0,
        q_ent_found / len(q.entities) if q.entities else 1.0,
        e_ent_found / len(e.entities) if e.entities else 1.0,
        min(len(q.entities) - q_ent_found, 3) / 3,
        min(run, 6) / 6,
        run / len(q.tokens) if q.tokens else 0.0,
        float(np.mean(matched_pos)) if matched_pos else 0.0,
        min(matched_pos) if matched_pos else 0.0,
        max(matched_pos) if matched_pos else 0.0,
        1.0 if matched_pos else 0.0,
        1.0 if e.content and e.content[0] in q_content else 0.0,
        1.0 if e.content and e.content[-1] in q_content else 0.0,
        0.0 if rel_q else 1.0,
        rel_shared / len(rel_q) if rel_q else 0.0,
        rel_shared / len(rel_e) if rel_e else 0.0,
        min(len(q.tokens), 30) / 30,
        min(len(e.tokens), 30) / 30,
    ]


def lexical_feature_matrix(questions: Sequence[str], edit_texts: Sequence[str], cosines: np.ndarray) -> np.ndarray:
    """``(n, len(LEXICAL_FEATURES))`` float32 lexical features of aligned pairs."""
    rows = [lexical_features(q, e, c) for q, e, c in zip(questions, edit_texts, cosines)]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(LEXICAL_FEATURES))


def embedding_features(q_vecs: np.ndarray, e_vecs: np.ndarray, parts: Sequence[str] = EMBEDDING_PARTS) -> np.ndarray:
    """Concatenate the embedding parts (``u*v``, ``|u-v|``, ``u``, ``v``) of aligned pairs."""
    table = {
        "u*v": lambda: q_vecs * e_vecs,
        "|u-v|": lambda: np.abs(q_vecs - e_vecs),
        "u": lambda: q_vecs,
        "v": lambda: e_vecs,
    }
    return np.concatenate([table[p]() for p in parts], axis=1).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- the classifier


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def _gelu(x: np.ndarray) -> np.ndarray:
    # the tanh approximation; torch.nn.GELU(approximate="tanh") is used in training
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # A router scores ~5 pairs at a time: a multi-threaded BLAS call on such a small product can
    # stall for tens of milliseconds on a busy machine, a plain loop never does (~0.3 ms here).
    if a.shape[0] <= 32:
        return np.einsum("ij,jk->ik", a, b, optimize=False)
    return a @ b


WEIGHT_NAMES = ("lex_mean", "lex_std", "w1", "b1", "w2", "b2", "w3", "b3")


@dataclass
class ScopeClassifier:
    """A trained scope classifier: MLP weights, calibration and decision threshold.

    ``weights`` holds float32 arrays named as in :data:`WEIGHT_NAMES` (``wK`` are
    ``(in, out)``); ``meta`` is the JSON metadata stored beside them.
    """

    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ properties
    @property
    def threshold(self) -> float:
        """Decision threshold on the calibrated probability, chosen on the calibration split."""
        return float(self.meta["calibration"]["threshold"])

    @property
    def temperature(self) -> float:
        """Platt slope expressed as a temperature (logit / T before the bias)."""
        return 1.0 / float(self.meta["calibration"]["platt_a"])

    @property
    def embedder_name(self) -> str:
        return str(self.meta["embedder"]["name"])

    @property
    def dim(self) -> int:
        return int(self.meta["embedder"]["dim"])

    # ------------------------------------------------------------------ loading
    @staticmethod
    def artifact_paths(path: str | Path | None = None) -> tuple[Path, Path]:
        """``(json, safetensors)`` paths for a directory, either file, or the packaged artifact."""
        p = Path(path) if path is not None else PACKAGED_DIR
        if p.is_dir():
            p = p / f"{ARTIFACT_STEM}.json"
        if p.suffix not in (".json", ".safetensors"):
            p = p.with_name(p.name + ".json")
        return p.with_suffix(".json"), p.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path | None = None, embedder: "str | Embedder | None" = None) -> "ScopeClassifier":
        """Load an artifact (default: the one shipped in ``memedit/resources``).

        ``path`` may be a directory holding ``scope-classifier.json`` /
        ``.safetensors`` or either file. If ``embedder`` (a name or an
        :class:`~memedit.embeddings.Embedder`) is given, its name and dimension
        must match the ones the classifier was trained with.
        """
        json_path, st_path = cls.artifact_paths(path)
        for p in (json_path, st_path):
            if not p.is_file():
                raise ScopeArtifactError(f"scope classifier file missing: {p} (train one with `memedit scope train`)")
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ScopeArtifactError(f"{json_path} is not valid JSON: {exc}") from exc
        try:
            from safetensors.numpy import load_file

            weights = load_file(str(st_path))
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise ScopeArtifactError(f"{st_path} is not a readable safetensors file: {exc}") from exc
        clf = cls(weights={k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}, meta=meta)
        clf._validate(source=str(json_path))
        if embedder is not None:
            name = embedder if isinstance(embedder, str) else embedder.name
            dim = None if isinstance(embedder, str) else int(embedder.dim)
            clf.check_embedder(name, dim)
        return clf

    def _validate(self, source: str = "<memory>") -> None:
        """Raise :class:`ScopeArtifactError` unless metadata and weights are complete and consistent."""
        meta = self.meta
        if not isinstance(meta, dict):
            raise ScopeArtifactError(f"{source}: metadata must be a JSON object")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ScopeArtifactError(
                f"{source}: scope classifier format_version {version!r}, this memedit reads {FORMAT_VERSION}"
            )
        try:
            emb_name, dim = str(meta["embedder"]["name"]), int(meta["embedder"]["dim"])
            feats = meta["features"]
            parts = tuple(feats["embedding_parts"])
            lexical = tuple(feats["lexical"])
            float(meta["calibration"]["platt_a"]), float(meta["calibration"]["platt_b"])
            threshold = float(meta["calibration"]["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ScopeArtifactError(f"{source}: metadata incomplete or malformed ({exc!r})") from exc
        if feats.get("name") != FEATURE_SET:
            raise ScopeArtifactError(f"{source}: feature set {feats.get('name')!r}, this memedit computes {FEATURE_SET!r}")
        if lexical != LEXICAL_FEATURES:
            raise ScopeArtifactError(f"{source}: lexical feature list differs from this memedit's {LEXICAL_FEATURES}")
        if not set(parts) <= {"u*v", "|u-v|", "u", "v"}:
            raise ScopeArtifactError(f"{source}: unknown embedding parts {parts}")
        if not 0.0 < threshold < 1.0:
            raise ScopeArtifactError(f"{source}: threshold {threshold} outside (0, 1)")
        missing = [k for k in WEIGHT_NAMES if k not in self.weights]
        if missing:
            raise ScopeArtifactError(f"{source}: weights missing {missing}")
        n_in = dim * len(parts) + len(lexical)
        w = self.weights
        shapes_ok = (
            w["lex_mean"].shape == (len(lexical),)
            and w["lex_std"].shape == (len(lexical),)
            and w["w1"].shape[0] == n_in
            and w["b1"].shape == (w["w1"].shape[1],)
            and w["w2"].shape[0] == w["w1"].shape[1]
            and w["b2"].shape == (w["w2"].shape[1],)
            and w["w3"].shape == (w["w2"].shape[1], 1)
            and w["b3"].shape == (1,)
        )
        if not shapes_ok:
            raise ScopeArtifactError(
                f"{source}: weight shapes do not fit embedder {emb_name!r} (dim {dim}) and the feature spec "
                f"(expected first layer input {n_in}, got {tuple(w['w1'].shape)})"
            )
        if not all(np.isfinite(v).all() for v in w.values()):
            raise ScopeArtifactError(f"{source}: weights contain non-finite values")

    def check_embedder(self, name: str, dim: int | None = None) -> None:
        """Raise :class:`ScopeArtifactError` if vectors from embedder ``name`` (``dim``) do not fit."""
        if name != self.embedder_name:
            raise ScopeArtifactError(
                f"scope classifier was trained on {self.embedder_name!r} embeddings, but {name!r} is in use; "
                "retrain it with `memedit scope train` for this embedder"
            )
        if dim is not None and int(dim) != self.dim:
            raise ScopeArtifactError(f"embedder {name!r} gives {dim}-d vectors, the scope classifier expects {self.dim}")

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``scope-classifier.safetensors`` and ``.json`` into ``out_dir``; returns both paths."""
        from safetensors.numpy import save_file

        self._validate()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path, st_path = out / f"{ARTIFACT_STEM}.json", out / f"{ARTIFACT_STEM}.safetensors"
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self.weights.items()}, str(st_path),
                  metadata={"format": "memedit-scope-classifier", "format_version": str(FORMAT_VERSION)})
        json_path.write_text(json.dumps(self.meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return json_path, st_path

    # ------------------------------------------------------------------ inference
    def embedder(self) -> "Embedder":
        """The shared embedder this classifier was trained with (loaded on first use)."""
        from .embeddings import Embedder

        try:
            emb = Embedder.shared(self.embedder_name)
        except (OSError, ValueError) as exc:  # not installed / not on disk (we never reach a hub)
            raise ScopeArtifactError(
                f"cannot load the embedder {self.embedder_name!r} this scope classifier was trained with: {exc}"
            ) from exc
        self.check_embedder(emb.name, emb.dim)
        return emb

    def features(
        self, questions: Sequence[str], edit_texts: Sequence[str], q_vecs: np.ndarray, e_vecs: np.ndarray
    ) -> np.ndarray:
        """The normalised input matrix of the MLP for aligned pairs."""
        cos = np.einsum("ij,ij->i", q_vecs, e_vecs)
        lex = lexical_feature_matrix(questions, edit_texts, cos)
        lex = (lex - self.weights["lex_mean"]) / self.weights["lex_std"]
        parts = tuple(self.meta["features"]["embedding_parts"])
        return np.concatenate([embedding_features(q_vecs, e_vecs, parts), lex], axis=1)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Uncalibrated logits of feature rows ``x``."""
        w = self.weights
        h = _gelu(_matmul(x, w["w1"]) + w["b1"])
        h = _gelu(_matmul(h, w["w2"]) + w["b2"])
        return (_matmul(h, w["w3"]) + w["b3"])[:, 0]

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        """Platt scaling: ``sigmoid(a * logit + b)``."""
        cal = self.meta["calibration"]
        return _sigmoid(float(cal["platt_a"]) * logits + float(cal["platt_b"]))

    def _vectors(self, texts: Sequence[str], vecs: np.ndarray | None, what: str) -> np.ndarray:
        if vecs is None:
            return self.embedder().encode(list(texts))
        arr = np.asarray(vecs, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != len(texts):
            raise ValueError(f"{what} must have shape ({len(texts)}, {self.dim}), got {arr.shape}")
        if arr.shape[1] != self.dim:
            raise ScopeArtifactError(
                f"{what} are {arr.shape[1]}-d but the scope classifier expects {self.dim}-d {self.embedder_name!r} vectors"
            )
        return arr

    def predict_proba(
        self,
        questions: Sequence[str],
        edit_texts: Sequence[str],
        q_vecs: np.ndarray | None = None,
        e_vecs: np.ndarray | None = None,
    ) -> np.ndarray:
        """Calibrated P(in scope) of each aligned (question, edit text) pair, as float32 in [0, 1].

        Pass ``q_vecs`` / ``e_vecs`` (unit vectors from the classifier's
        embedder, one row per pair) when you already have them; otherwise the
        texts are embedded here.

        >>> clf = ScopeClassifier.load()
        >>> clf.predict_proba(["Who is Trump?", "Who is Trump?"],
        ...                   ["The current president of the US is Trump", "Paris is in France"]).round(2)  # doctest: +SKIP
        array([0.98, 0.  ], dtype=float32)
        """
        questions, edit_texts = list(questions), list(edit_texts)
        if len(questions) != len(edit_texts):
            raise ValueError(f"{len(questions)} questions but {len(edit_texts)} edit texts; pairs must be aligned")
        if not questions:
            return np.zeros(0, dtype=np.float32)
        q = self._vectors(questions, q_vecs, "q_vecs")
        e = self._vectors(edit_texts, e_vecs, "e_vecs")
        x = self.features(questions, edit_texts, q, e)
        return self.calibrate(self.logits(x)).astype(np.float32)

    def predict(self, questions: Sequence[str], edit_texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        """Boolean in-scope decisions (``predict_proba >= threshold``)."""
        return self.predict_proba(questions, edit_texts, **kwargs) >= self.threshold
