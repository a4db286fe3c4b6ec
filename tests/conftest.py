"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE is set before any import."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def memedit_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted models are cached once per test session (or in $MEMEDIT_TEST_CACHE to reuse across runs)."""
    reuse = os.environ.get("MEMEDIT_TEST_CACHE")
    path = Path(reuse) if reuse else tmp_path_factory.mktemp("memedit-cache")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["MEMEDIT_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def embedder():
    """The real packaged all-MiniLM-L6-v2 encoder, loaded once."""
    from memedit.embeddings import Embedder

    return Embedder.shared()
