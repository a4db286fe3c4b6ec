"""Audit API speed: the list and search endpoints at 10k and 100k edits (p50/p99), over real HTTP.

    python benchmarks/bench_web.py --sizes 10000 100000 [--reps 200] [--threads 1] [--json out.json]

For each size a store is filled with the synthetic fact edits of
``bench_store.make_edits`` (10% pending, 50 authors, sources on half). The
texts' vectors are inserted in bulk: the real MiniLM embeds 2,000 of them and
every other edit gets one of those vectors plus a little noise (the embedder
manages ~280 texts/s here, so embedding 100k would take six minutes and
measure the embedder, not the API). Search latency does not depend on vector
content (exact inner-product search over every vector of the namespace), and
queries are embedded by the real model. The app runs under uvicorn on
127.0.0.1; requests go through one keep-alive ``httpx`` client with a Bearer
token. Reported per endpoint: p50 and p99 in ms over ``--reps`` requests
(a tenth of them, at least 5, for deep pages and the full-scan filter) and the rows
the last one returned. ``--reuse`` keeps stores built earlier in ``--workdir``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from bench_store import make_edits, pct  # noqa: E402  (the store benchmark's synthetic edits)
from memedit import EditStore  # noqa: E402
from memedit.embeddings import Embedder  # noqa: E402

log = logging.getLogger("bench_web")


class BulkEmbedder:
    """The real embedder's name and dimension; ``bulk`` mode reuses a pool of real vectors with noise."""

    def __init__(self, real: Embedder, pool_texts: list[str], noise: float = 0.05):
        self.real, self.name, self.dim = real, real.name, real.dim
        self.pool = real.encode(pool_texts)
        self.noise = noise
        self.bulk = True
        self._rng = np.random.default_rng(0)

    def encode(self, texts, show_progress: bool = False) -> np.ndarray:  # noqa: ARG002
        if not self.bulk:
            return self.real.encode(texts)
        idx = np.array([zlib.crc32(t.encode()) % len(self.pool) for t in texts])
        v = self.pool[idx] + self.noise * self._rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float32)


def build_store(path: Path, n: int, embedder: BulkEmbedder, reuse: bool = False) -> tuple[EditStore, list[str]]:
    edits, questions = make_edits(n)
    if reuse and path.exists():
        store = EditStore(path, embedder=embedder)
        if store.count("default") == n:
            embedder.bulk = False
            store.search(questions[0], k=5)
            log.warning("reusing %s", path)
            return store, questions
        store.close()
        raise SystemExit(f"{path} does not hold {n} edits; remove it or drop --reuse")
    rng = random.Random(2)
    edits = [replace(e, author=f"user{i % 50}", source=(f"chat message {i}" if i % 2 else None))
             for i, e in enumerate(edits)]
    store = EditStore(path, embedder=embedder)
    embedder.bulk = True
    t0 = time.perf_counter()
    pending = set(rng.sample(range(n), n // 10))
    store.add_many([e for i, e in enumerate(edits) if i not in pending], batch_size=2048, progress=sys.stderr.isatty())
    store.add_many([e for i, e in enumerate(edits) if i in pending], status="pending", batch_size=2048)
    log.warning("built %d edits in %.1f s", n, time.perf_counter() - t0)
    embedder.bulk = False
    store.search(questions[0], k=5)  # index loaded and caches warm before timing
    return store, questions


def _serve(app) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def time_requests(client, url: str, params_list: list[dict], headers: dict) -> tuple[list[float], int]:
    lat, rows = [], 0
    for params in params_list:
        t0 = time.perf_counter()
        r = client.get(url, params=params, headers=headers)
        lat.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        body = r.json() if "json" in r.headers.get("content-type", "") else None
        rows = len(body["edits"]) if isinstance(body, dict) and "edits" in body else len(body) if isinstance(body, list) else rows
    return lat, rows


def bench_size(n: int, reps: int, workdir: Path, embedder: BulkEmbedder, reuse: bool = False) -> list[dict]:
    import httpx

    from memedit.policy import NamespacePolicy
    from memedit.web.app import create_app
    from memedit.web.auth import TokenFile

    store, questions = build_store(workdir / f"web-{n}.db", n, embedder, reuse)
    tokens, _ = TokenFile.open(workdir / f"web-{n}.tokens.json", create_admin=False)
    secret = tokens.create(f"bench-{time.time_ns()}", namespaces=["*"], write=False)
    base, server = _serve(create_app(store, tokens=tokens, policy=NamespacePolicy()))
    headers = {"Authorization": f"Bearer {secret}"}
    rng = random.Random(3)
    qs = [questions[rng.randrange(n)] for _ in range(reps)]
    pages = n // 50
    few = max(5, reps // 10)  # deep pages and full scans take ~0.1-1 s each at 100k
    cases = [
        ("list, first page (50)", "/api/edits", [{"namespace": "default"}] * reps),
        ("list, random page", "/api/edits", [{"namespace": "default", "offset": 50 * rng.randrange(pages)} for _ in range(few)]),
        ("list, last page", "/api/edits", [{"namespace": "default", "offset": n - 50}] * few),
        ("list, status=pending", "/api/edits", [{"namespace": "default", "status": "pending"}] * reps),
        ("list, author filter", "/api/edits", [{"namespace": "default", "author": f"user{i % 50}"} for i in range(reps)]),
        ("list, text contains", "/api/edits", [{"namespace": "default", "q": q.split("?")[0].split()[-2]} for q in qs]),
        ("list, source (scan)", "/api/edits", [{"namespace": "default", "source": "message 1"}] * few),
        ("search, semantic k=10", "/api/search", [{"namespace": "default", "q": q, "k": 10} for q in qs]),
        ("page /ui/edits (HTML)", "/ui/edits", [{"namespace": "default"}] * reps),
    ]
    out = []
    with httpx.Client(base_url=base, timeout=120) as client:
        # the HTML page needs a session: sign in once
        client.post("/ui/login", data={"token": secret, "next": "/ui/edits"})
        for name, url, params in cases:
            time_requests(client, url, params[:3], headers)  # warm
            lat, rows = time_requests(client, url, params, headers)
            out.append({"edits": n, "endpoint": name, "p50_ms": statistics.median(lat), "p99_ms": pct(lat, 99),
                        "requests": len(lat), "rows": rows})
    server.should_exit = True  # type: ignore[attr-defined]
    time.sleep(0.3)
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--workdir", type=Path, help="where to put the stores (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="reuse stores this benchmark built earlier in --workdir")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 holds up better on a busy machine)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    real = Embedder.shared()
    pool_texts = [e.sentence() for e in make_edits(2000, seed=99)[0]]
    embedder = BulkEmbedder(real, pool_texts)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="memedit-bench-web-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [r for n in args.sizes for r in bench_size(n, args.reps, workdir, embedder, args.reuse)]
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv),
            "load_average_at_end": os.getloadavg()}
    print(json.dumps(meta))
    print("edits | endpoint | p50 | p99 | requests | rows")
    for r in rows:
        print(f"{r['edits']} | {r['endpoint']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['requests']} | {r['rows']}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
