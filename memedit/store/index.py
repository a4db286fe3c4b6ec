"""The derived vector index: FAISS, ids equal to edit ids, rebuildable from SQLite.

>>> import numpy as np
>>> from memedit.store.index import VectorIndex
>>> idx = VectorIndex(dim=4)
>>> idx.add(np.array([7, 7]), np.eye(4, dtype="float32")[:2])
>>> idx.search(np.eye(4, dtype="float32")[:1], k=1, allowed=np.array([7]))[0]
[(7, 1.0)]

An edit can have several vectors (statement, filled prompt, paraphrases), all
under the edit's id, so a search returns each edit at most once with its best
score. The exact inner-product index (``IndexIDMap`` over ``IndexFlatIP``)
supports removal, which forgetting needs, and never returns an approximate
match. Namespace and status filtering happen *inside* the search through an
``IDSelector``, never by post-filtering, so a search cannot return an edit
outside the allowed id set.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)


class VectorIndex:
    """An in-memory FAISS index of unit vectors keyed by edit id."""

    def __init__(self, dim: int, index: faiss.Index | None = None):
        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        if self._index.d != dim:
            raise ValueError(f"index dimension {self._index.d} != expected {dim}")

    # ---- contents ---------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """The edit id of every vector (one entry per vector), sorted."""
        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(ids) != len(vecs):
            raise ValueError(f"expected ({len(ids)}, {self.dim}) vectors, got {vecs.shape}")
        if len(ids):
            self._index.add_with_ids(vecs, ids)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    # ---- search -----------------------------------------------------
    @staticmethod
    def selector(allowed: np.ndarray) -> "faiss.SearchParameters":
        """Search parameters restricting a search to ``allowed`` ids (build once, reuse for many searches)."""
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        params = faiss.SearchParameters(sel=sel)
        params.keep_alive = sel  # SearchParameters holds a raw pointer: the selector must outlive it
        params.n_allowed = len(allowed)  # an empty selector means "nothing", not "everything"
        return params

    def search(
        self, queries: np.ndarray, k: int, allowed: "np.ndarray | faiss.SearchParameters | None" = None
    ) -> list[list[tuple[int, float]]]:
        """Top ``k`` distinct edit ids per query, best first, restricted to ``allowed`` ids.

        ``allowed`` is an id array or prebuilt :meth:`selector` parameters;
        ``None`` searches everything; an empty set returns nothing.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        params = self.selector(allowed) if isinstance(allowed, np.ndarray) else allowed
        if self.ntotal == 0 or k <= 0 or (params is not None and params.n_allowed == 0):
            return [[] for _ in range(len(queries))]
        # Several vectors share an edit id; over-fetch, then keep each id's best score.
        fetch = min(self.ntotal, max(k * 4, k + 8))
        while True:
            scores, labels = self._index.search(queries, fetch, params=params)
            results = [_best_per_id(lab, sc, k) for lab, sc in zip(labels, scores)]
            exhausted = fetch >= self.ntotal or all((lab < 0).any() for lab in labels)
            if exhausted or all(len(r) >= k for r in results):
                return results
            fetch = min(self.ntotal, fetch * 4)

    # ---- persistence ------------------------------------------------
    def save(self, path: Path) -> str:
        """Write atomically (temp file, fsync, rename, fsync dir); return the file's sha256."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        data = faiss.serialize_index(self._index).tobytes()
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: Path, dim: int, expected_sha256: str | None) -> "VectorIndex":
        """Read an index file, refusing it (ValueError) if its checksum or dimension is off."""
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise ValueError("index file checksum does not match the one recorded in the database")
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:  # faiss raises RuntimeError on malformed input
            raise ValueError(f"index file is unreadable: {exc}") from exc
        if not isinstance(index, faiss.IndexIDMap):
            raise ValueError(f"unexpected index type {type(index).__name__}")
        return cls(dim, index)


def _best_per_id(labels: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    out: dict[int, float] = {}
    for label, score in zip(labels.tolist(), scores.tolist()):
        if label < 0:
            break
        if label not in out:
            out[label] = score
            if len(out) == k:
                break
    return list(out.items())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)
