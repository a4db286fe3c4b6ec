"""Is a question multi-hop? A small classifier over the question's meaning, not a count of matched phrases.

>>> from memedit.methods.hop_detector import HopDetector
>>> det = HopDetector.load()                                          # the packaged artifact
>>> det.is_multi_hop("Where was the person who wrote Minecraft born?")   # doctest: +SKIP
True
>>> det.is_multi_hop("What sports team was Jari Lindqvist a member of?")  # doctest: +SKIP
False

A question is multi-hop when it asks about an entity it does not name but
describes through another fact ("the person who wrote X", "X's spouse's
employer", "the nation where X holds citizenship"). Counting the catalogue
relations a question's words match (the first detector) reads one relation
said twice ("sports team ... member of") as two hops and misses a chain said
in words the catalogue lacks ("who leads the nation where ...").

This detector reads the question with its head entity masked (the stored
subject, else the longest capitalised run, as :mod:`memedit.methods.multihop`
finds it, becomes ``X``): the packaged MiniLM sentence embedding of that text
plus a few structural counts (relative words after the first word,
possessives, nested "of the", words between a type noun and a relative word)
feed a logistic regression. The weights are ``hop-detector.safetensors``; the
metadata ``hop-detector.json`` records the embedder, the feature list, the
threshold, the training data's sha256 and the project split
(:mod:`memedit.eval.splits`) it was trained on, tune side only. Training:
:mod:`memedit.methods.hop_detector_train`; measurement:
``benchmarks/bench_multihop_detect.py``.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ..errors import MemeditError

if TYPE_CHECKING:  # pragma: no cover
    from ..embeddings import Embedder
    from .multihop import SubjectNames

log = logging.getLogger(__name__)

ARTIFACT_STEM = "hop-detector"
FORMAT_VERSION = 1
PACKAGED_DIR = Path(__file__).resolve().parents[1] / "resources"
MASK = "X"
_RELATIVE = {"where", "that", "which", "whose", "who", "whom", "whoever", "whichever"}
_TYPE_NOUNS = {"person", "man", "woman", "country", "nation", "city", "town", "place", "company", "firm", "team",
               "club", "side", "university", "school", "institution", "organization", "organisation", "studio",
               "network", "channel", "state", "one", "guy", "writer", "author", "director", "founder", "player"}
#: the structural counts, in the order the weights expect
STRUCT_FEATURES = ("relative_words", "possessives", "of_the", "type_then_relative", "content_words",
                   "entity_at_end")


class HopDetectorError(MemeditError, ValueError):
    """The hop-detector artifact is missing, corrupt or does not fit the embedder."""


def _words(text: str) -> list[str]:
    return re.findall(r"[\w\-]+|'s\b|’s\b", text.casefold())


def masked(question: str, known: "Iterable[str] | SubjectNames" = ()) -> str:
    """``question`` with its head entity replaced by ``X`` (unchanged when none is found).

    >>> masked("Where was the person who wrote Minecraft born?")
    'Where was the person who wrote X born?'
    """
    from .multihop import default_decomposer, tokenize

    toks = tokenize(question)
    ent = default_decomposer().find_entity(question, toks, known)
    if ent is None:
        return question
    s, e = ent[2]
    return question[:toks[s].start] + MASK + question[toks[e - 1].end:]


def structure(masked_question: str) -> list[float]:
    """The structural counts of :data:`STRUCT_FEATURES` for a masked question."""
    w = _words(masked_question)
    rel = sum(1 for x in w[1:] if x in _RELATIVE)
    poss = sum(1 for x in w if x in ("'s", "’s"))
    of_the = len(re.findall(r"\bof (?:the|a|an)\b", masked_question.casefold()))
    type_rel = sum(1 for i in range(len(w) - 1) if w[i] in _TYPE_NOUNS
                   and (w[i + 1] in _RELATIVE or (i + 2 < len(w) and w[i + 2] in _RELATIVE)))
    content = sum(1 for x in w if len(x) > 3 and x not in _RELATIVE and x != MASK.casefold())
    at_end = float(bool(w) and w[-1] == MASK.casefold())
    return [float(rel), float(poss), float(of_the), float(type_rel), content / 10.0, at_end]


@dataclass
class HopDetector:
    """A logistic regression over [MiniLM(masked question), structural counts]; see the module docstring."""

    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    _embedder: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def embedder_name(self) -> str:
        return str(self.meta["embedder"])

    @staticmethod
    def artifact_paths(path: str | Path | None = None) -> tuple[Path, Path]:
        p = Path(path) if path is not None else PACKAGED_DIR
        if p.is_dir() or p.suffix not in (".json", ".safetensors"):
            p = p / f"{ARTIFACT_STEM}.json"
        return p.with_suffix(".json"), p.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path | None = None) -> "HopDetector":
        """The packaged detector, or the one at ``path`` (a directory or either file)."""
        json_path, st_path = cls.artifact_paths(path)
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            from safetensors.numpy import load_file

            weights = {k: np.asarray(v, np.float32) for k, v in load_file(str(st_path)).items()}
        except Exception as exc:  # OSError, JSON errors, safetensors' own error types
            raise HopDetectorError(f"cannot read the hop detector at {json_path}: {exc}") from exc
        det = cls(weights, meta)
        det._validate(str(json_path))
        return det

    def _validate(self, source: str) -> None:
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise HopDetectorError(f"{source}: format_version {self.meta.get('format_version')!r} is not "
                                   f"{FORMAT_VERSION}")
        if list(self.meta.get("struct_features", [])) != list(STRUCT_FEATURES):
            raise HopDetectorError(f"{source}: its structural features differ from this version's")
        dim = int(self.meta.get("dim", -1))
        need = {"w": (dim + len(STRUCT_FEATURES),), "b": (1,), "mean": (dim + len(STRUCT_FEATURES),),
                "std": (dim + len(STRUCT_FEATURES),)}
        for k, shape in need.items():
            if k not in self.weights or self.weights[k].shape != shape or not np.isfinite(self.weights[k]).all():
                raise HopDetectorError(f"{source}: weight {k!r} is missing, misshapen or not finite")

    def save(self, path: str | Path) -> tuple[Path, Path]:
        from safetensors.numpy import save_file

        json_path, st_path = self.artifact_paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in self.weights.items()}, str(st_path))
        json_path.write_text(json.dumps(self.meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return json_path, st_path

    # ---- scoring --------------------------------------------------------------------
    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    from ..embeddings import Embedder

                    self._embedder = Embedder.shared(self.embedder_name)
        return self._embedder

    def features(self, questions: Sequence[str], known: "Iterable[str] | SubjectNames" = ()) -> np.ndarray:
        """``(n, dim + len(STRUCT_FEATURES))``: the masked questions' embeddings and structural counts."""
        ms = [masked(q, known) for q in questions]
        vecs = np.asarray(self.embedder.encode(ms), np.float32).reshape(len(ms), -1)
        return np.concatenate([vecs, np.asarray([structure(m) for m in ms], np.float32)], axis=1)

    def proba(self, questions: Sequence[str], known: "Iterable[str] | SubjectNames" = ()) -> np.ndarray:
        """P(multi-hop) for each question."""
        if not questions:
            return np.zeros(0, np.float32)
        x = (self.features(questions, known) - self.weights["mean"]) / self.weights["std"]
        z = x @ self.weights["w"] + self.weights["b"][0]
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def is_multi_hop(self, question: str, known: "Iterable[str] | SubjectNames" = ()) -> bool:
        return bool(self.proba([question], known)[0] >= self.threshold)


_packaged: HopDetector | None = None
_packaged_lock = threading.Lock()


def packaged_detector() -> HopDetector:
    """The packaged detector, loaded once per process (raises HopDetectorError when it cannot be read)."""
    global _packaged
    with _packaged_lock:
        if _packaged is None:
            _packaged = HopDetector.load()
        return _packaged
