"""Where memedit keeps things on disk, and how users move them.

>>> from memedit.config import cache_dir
>>> cache_dir().name  # doctest: +SKIP
'memedit'

* Converted models, second-moment statistics and other caches live under
  :func:`cache_dir`: ``$MEMEDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/memedit``,
  else ``~/.cache/memedit``. Never inside the installed package.
* Stores default to ``./stores/default.db`` (``$MEMEDIT_STORE`` overrides).
* The embedder runs in NumPy on the CPU unless ``$MEMEDIT_EMBEDDER_BACKEND``
  says ``sentence-transformers`` (faster in a process that already holds torch
  and embeds a lot; see :class:`memedit.embeddings.Embedder`).
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_NAMESPACE = "default"


def cache_dir() -> Path:
    """The cache root, created on first use."""
    env = os.environ.get("MEMEDIT_CACHE_DIR")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "memedit"
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_store_path() -> Path:
    """The store used when none is named: ``$MEMEDIT_STORE`` or ``./stores/default.db``."""
    env = os.environ.get("MEMEDIT_STORE")
    return Path(env).expanduser() if env else Path("stores") / "default.db"
