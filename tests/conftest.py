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
    parser.addoption("--no-postgres", action="store_true", default=False,
                     help="this machine has no PostgreSQL: skip the PostgreSQL tests (without it, a server that "
                          "cannot start fails them)")


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


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Every test runs torch on one thread: on a shared 2-core machine, two spinning OpenMP threads are up to
    ~20x slower, and the suite's models are small enough that one thread loses little when the machine is quiet."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def embedder():
    """The real packaged all-MiniLM-L6-v2 encoder, loaded once."""
    from memedit.embeddings import Embedder

    return Embedder.shared()


# ---- PostgreSQL (issue 7): a private server for the session, a fresh database per test ----------------

@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest):
    """A private PostgreSQL server with pgvector (the `pgserver` wheel).

    A server that cannot start (or a missing 'postgres' extra) fails the tests that need it, with the reason,
    unless the run says it has no PostgreSQL (``--no-postgres``): then they are skipped. Never a silent skip.
    """
    def unavailable(reason: str) -> None:
        if request.config.getoption("--no-postgres"):
            pytest.skip(f"--no-postgres: {reason}")
        pytest.fail(f"{reason} (run with --no-postgres on a machine without PostgreSQL)", pytrace=False)

    if request.config.getoption("--no-postgres"):
        pytest.skip("--no-postgres: this run has no PostgreSQL")
    try:
        import pgserver  # noqa: F401
        import pgvector  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        unavailable(f"PostgreSQL tests need the 'postgres' extra (pip install -e '.[postgres]'): {exc}")
    # Not under pytest's temp root: when running as root, the server runs as another user, and any pytest session
    # starting meanwhile resets /tmp/pytest-of-root to mode 0700, which would lock the server out of its directory.
    import shutil
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="memedit-pg-")) / "data"
    try:
        server = pgserver.get_server(data, cleanup_mode="stop")
    except Exception as exc:  # noqa: BLE001 - any start failure: fail (or skip under --no-postgres), and say why
        shutil.rmtree(data.parent, ignore_errors=True)
        unavailable(f"could not start a private PostgreSQL server: {type(exc).__name__}: {exc}")
    yield server
    stop_pg_server(server)
    shutil.rmtree(data.parent, ignore_errors=True)


def stop_pg_server(server) -> None:
    """Stop a test server at once (its data is thrown away: no shutdown checkpoint), then let pgserver tidy up."""
    from pgserver._commands import pg_ctl

    try:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
    except Exception:  # noqa: BLE001 - already stopped; cleanup() below handles the rest
        pass
    server.cleanup()


@pytest.fixture
def pg_url(pg_server):
    """A factory: each call creates an empty database on the session server and returns its URL."""
    import itertools
    import uuid

    import psycopg

    counter = itertools.count()

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}_{next(counter)}"
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return pg_server.get_uri(database=name)

    return make
