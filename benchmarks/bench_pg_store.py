"""PostgreSQL + pgvector store versus the SQLite + FAISS default, in one run on one machine.

    python benchmarks/bench_pg_store.py --sizes 10000 [100000] [--url postgresql://...] [--json out.json]

Without ``--url`` a private server is started with ``pgserver`` (PostgreSQL
16 + pgvector 0.6, unix socket, default settings). For each size both stores
are filled with the same synthetic fact edits and the same vectors: the
first ``--embed`` edits embedded for real (their questions are the queries),
the rest random unit vectors (distractors), inserted directly, because the
embedder (~280 texts/s here) would dominate. Reported per backend:

* store-path add throughput (``_insert`` per edit, batches of 500 in one
  transaction: validation, supersession check, vectors, hash-chained event;
  embedding excluded, it is the same for both) measured on ``--add-sample``
  edits; the rest of the store is bulk-loaded;
* ``search_vector`` p50/p99 (k=5, the query already embedded) and top-1 =
  the asked subject; PostgreSQL/SQLite ratio;
* 4 concurrent client processes: aggregate searches/s and p50/p99, and
  aggregate adds/s with 4 writers;
* replica visibility: one process adds an edit, another polls; the time from
  ``add`` returning to the other process finding it (median, p99).

``--faiss-threads 1`` pins FAISS to one thread in every process (on a busy
2-core machine its spinning OpenMP threads slow each search many times).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from memedit.edits import Edit  # noqa: E402
from memedit.store.chain import GENESIS, canonical_json, event_hash  # noqa: E402
from memedit.store.common import checked_new_edit, new_edit_row  # noqa: E402
from memedit.store.open import open_store  # noqa: E402

log = logging.getLogger("bench_pg_store")
DIM = 384


class FixedVectors:
    """An embedder stand-in for benchmark clients that only use precomputed vectors (no model load)."""

    def __init__(self, name: str = "all-MiniLM-L6-v2", dim: int = DIM):
        self.name, self.dim = name, dim

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        raise RuntimeError("benchmark clients search with precomputed vectors only")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---- filling ------------------------------------------------------------------------------------------

def store_path_add(store: Any, edits: list[Edit], vecs: np.ndarray, batch: int = 500) -> float:
    """Add through the store's own insert path (embedding excluded); returns adds/s."""
    store._check_embedder()
    t0 = time.perf_counter()
    for start in range(0, len(edits), batch):
        with store._write():
            gen = store._next_gen()
            for e, v in zip(edits[start:start + batch], vecs[start:start + batch]):
                store._insert(checked_new_edit(e, "active"), v[None, :], gen, None, "add")
    return len(edits) / (time.perf_counter() - t0)


def bulk_load(store: Any, edits: list[Edit], vecs: np.ndarray) -> float:
    """Insert many new (non-superseding) edits with their vectors and chained events directly; returns seconds."""
    t0 = time.perf_counter()
    pg = store.__class__.__name__ == "PgEditStore"
    with store._write():
        gen = store._next_gen()
        last = store._row("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        seq, prev = (last["seq"], last["hash"]) if last else (0, GENESIS)
        next_id = int(store._row("SELECT coalesce(max(id), 0) AS m FROM edits")["m"]) + 1
        rows, events, vrows = [], [], []
        for i, (e, v) in enumerate(zip(edits, vecs)):
            row = new_edit_row(checked_new_edit(e, "active"), gen, {"id": next_id + i})
            rows.append(row)
            seq += 1
            ts = row["created_at"]
            body = canonical_json({"uid": row["uid"], "content_hash": row["content_hash"], "status": "active"})
            prev_hash, prev = prev, event_hash(prev, seq, ts, e.namespace, row["id"], "add", None, body)
            events.append((seq, ts, e.namespace, row["id"], "add", None, body, prev_hash, prev))
            vrows.append((row["id"], 0, e.namespace, "active", v) if pg else (row["id"], 0, v.tobytes()))
        cols = list(rows[0])
        if pg:
            conn = store._c()
            conn.execute("DROP INDEX IF EXISTS vectors_hnsw")
            with conn.cursor() as cur:
                with cur.copy(f"COPY edits ({', '.join(cols)}) FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row([r[c] for c in cols])
                with cur.copy("COPY events (seq, ts, namespace, edit_id, kind, actor, payload, prev_hash, hash) "
                              "FROM STDIN") as cp:
                    for ev in events:
                        cp.write_row(ev)
                with cur.copy("COPY vectors (edit_id, k, namespace, status, vec) FROM STDIN") as cp:
                    for vr in vrows:
                        cp.write_row(vr)
            conn.execute("SELECT setval('edits_id_seq', %s)", [next_id + len(rows) - 1])
        else:
            c = store._conn
            c.executemany(f"INSERT INTO edits({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                          [[r[k] for k in cols] for r in rows])
            c.executemany("INSERT INTO events(seq, ts, namespace, edit_id, kind, actor, payload, prev_hash, hash) "
                          "VALUES (?,?,?,?,?,?,?,?,?)", events)
            c.executemany("INSERT INTO vectors(edit_id, k, vec) VALUES (?, ?, ?)", vrows)
        store._set_meta("head_hash", prev)
        store._set_meta("event_count", str(seq))
    if pg:
        t1 = time.perf_counter()
        store._read(lambda c: c.execute("SET maintenance_work_mem = '1GB'"))
        store._read(lambda c: c.execute(
            "CREATE INDEX vectors_hnsw ON vectors USING hnsw (vec vector_cosine_ops)"))
        store._read(lambda c: c.execute("ANALYZE vectors"))
        log.info("HNSW build: %.1fs", time.perf_counter() - t1)
    store._sync_index()
    return time.perf_counter() - t0


# ---- measuring ---------------------------------------------------------------------------------------------

def search_latency(store: Any, qvecs: np.ndarray, subjects: list[str]) -> dict[str, float]:
    store.search_vector(qvecs[0], k=5)  # warm: index loaded, caches filled
    lat, top1 = [], 0
    for q, subj in zip(qvecs, subjects):
        t0 = time.perf_counter()
        hits = store.search_vector(q, k=5)
        lat.append((time.perf_counter() - t0) * 1000)
        top1 += bool(hits) and hits[0].edit.subject == subj
    return {"p50_ms": statistics.median(lat), "p99_ms": pct(lat, 99), "top1": top1 / len(qvecs)}


def run_clients(role: str, target: str, n_clients: int, arg: str, count: int) -> dict[str, float]:
    procs = [subprocess.Popen([sys.executable, __file__, "--client", role, target, arg, str(count), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n_clients)]
    for p in procs:  # every client loads, then waits for the go file
        line = p.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(p.stderr.read())  # type: ignore[union-attr]
    go = Path(arg).with_suffix(".go")
    t0 = time.perf_counter()
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode:
            raise RuntimeError(err)
        outs.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - t0
    go.unlink()
    lat = [x for o in outs for x in o["lat_ms"]]
    return {"per_s": len(lat) / wall, "p50_ms": statistics.median(lat), "p99_ms": pct(lat, 99)}


def client(role: str, target: str, arg: str, count: int, idx: int) -> None:
    store = open_store(target, embedder=FixedVectors(), create=False)
    vecs = np.load(arg, allow_pickle=False)
    rng = np.random.default_rng(1000 + idx)
    store.search_vector(vecs[0], k=5)
    print(json.dumps({"ready": True}), flush=True)
    go = Path(arg).with_suffix(".go")
    while not go.exists():
        time.sleep(0.005)
    lat = []
    for i in range(count):
        t0 = time.perf_counter()
        if role == "search":
            store.search_vector(vecs[(i * 7 + idx) % len(vecs)], k=5)
        else:
            e = Edit.fact(f"Client {idx} thing {i} {os.getpid()}", "The colour of {} is", f"colour {i}")
            v = unit(rng, 1)
            with store._write():
                store._insert(checked_new_edit(e, "active"), v, store._next_gen(), None, "add")
            store._sync_index()
        lat.append((time.perf_counter() - t0) * 1000)
    store.close()
    print(json.dumps({"lat_ms": lat}), flush=True)


def visibility(target: str, workdir: Path, trials: int) -> dict[str, float]:
    """Median/p99 seconds from one process's add returning to another process finding the edit."""
    rng = np.random.default_rng(7)
    qv = unit(rng, trials)
    qfile = workdir / f"vis-{abs(hash(target)) % 10**8}.npy"
    np.save(qfile, qv, allow_pickle=False)
    store = open_store(target, embedder=FixedVectors())
    store.create_namespace("vis")
    reader = subprocess.Popen([sys.executable, __file__, "--client", "watch", target, str(qfile), str(trials), "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(reader.stdout.readline())["ready"]  # type: ignore[union-attr]
    gaps = []
    for i in range(trials):
        e = checked_new_edit(Edit.text(f"Visibility probe number {i}.", namespace="vis"), "active")
        with store._write():
            store._insert(e, qv[i:i + 1], store._next_gen(), None, "add")
        t_done = time.monotonic()
        store._sync_index()
        seen = json.loads(reader.stdout.readline())  # type: ignore[union-attr]
        gaps.append(max(0.0, seen["t"] - t_done) * 1000)
    reader.wait(60)
    store.close()
    return {"median_ms": statistics.median(gaps), "p99_ms": pct(gaps, 99)}


def watch_client(target: str, qfile: str, trials: int) -> None:
    store = open_store(target, embedder=FixedVectors(), create=False)
    qv = np.load(qfile, allow_pickle=False)
    store.require_namespace("vis")
    print(json.dumps({"ready": True}), flush=True)
    for i in range(trials):
        while True:
            hits = store.search_vector(qv[i], "vis", k=1)
            if hits and hits[0].score > 0.999:
                print(json.dumps({"t": time.monotonic()}), flush=True)
                break
    store.close()


# ---- one size -------------------------------------------------------------------------------------------------

def bench_size(n: int, args: argparse.Namespace, url: str, workdir: Path, embedder: Any) -> dict[str, Any]:
    from bench_store import make_edits

    edits, questions = make_edits(n)
    n_real = min(n, args.embed)
    cache = workdir / f"real-{n_real}.npy"
    if cache.exists():
        real = np.load(cache, allow_pickle=False)
    else:
        t0 = time.perf_counter()
        real = embedder.encode([e.search_texts()[0] for e in edits[:n_real]])
        log.info("embedded %d texts in %.0fs", n_real, time.perf_counter() - t0)
        np.save(cache, real, allow_pickle=False)
    vecs = np.concatenate([real, unit(np.random.default_rng(n), n - n_real)]).astype(np.float32)
    # the real edits are spread through the store, so the sampled adds and the bulk both hold some
    order = np.random.default_rng(3).permutation(n)
    edits, vecs = [edits[i] for i in order], vecs[order]
    qidx = [int(np.where(order == i)[0][0]) for i in random.Random(1).sample(range(n_real), min(args.queries, n_real))]
    qvecs = embedder.encode([questions[order[j]] for j in qidx])
    subjects = [edits[j].subject for j in qidx]
    qfile = workdir / f"q-{n}.npy"
    np.save(qfile, qvecs, allow_pickle=False)

    result: dict[str, Any] = {"edits": n, "embedded_for_real": n_real}
    sample = min(n, args.add_sample)
    with psycopg_db(url, f"bench_{n}") as pg_url:
        targets = {"sqlite": str(workdir / f"bench-{n}.db"), "postgres": pg_url}
        for name, target in targets.items():
            store = open_store(target, embedder=FixedVectors())
            add_rate = store_path_add(store, edits[:sample], vecs[:sample])
            bulk_s = bulk_load(store, edits[sample:], vecs[sample:]) if n > sample else 0.0
            store.close()
            store = open_store(target, embedder=FixedVectors())
            t0 = time.perf_counter()
            store.search_vector(qvecs[0], k=5)
            first_s = time.perf_counter() - t0
            lat = search_latency(store, qvecs, subjects)
            store.close()
            conc_search = run_clients("search", target, 4, str(qfile), args.queries)
            conc_add = run_clients("add", target, 4, str(qfile), args.concurrent_adds)
            vis = visibility(target, workdir, args.trials)
            result[name] = {"add_per_s": add_rate, "bulk_load_s": bulk_s, "open_first_search_s": first_s,
                            "search_p50_ms": lat["p50_ms"], "search_p99_ms": lat["p99_ms"], "top1": lat["top1"],
                            "4_clients_searches_per_s": conc_search["per_s"], "4_clients_search_p50_ms": conc_search["p50_ms"],
                            "4_clients_search_p99_ms": conc_search["p99_ms"], "4_clients_adds_per_s": conc_add["per_s"],
                            "4_clients_add_p50_ms": conc_add["p50_ms"], "visibility_median_ms": vis["median_ms"],
                            "visibility_p99_ms": vis["p99_ms"]}
            log.info("%s %d: %s", name, n, result[name])
    s, p = result["sqlite"], result["postgres"]
    result["ratio_pg_over_sqlite"] = {k: p[k] / s[k] for k in s if isinstance(s[k], float) and s[k]}
    return result


class psycopg_db:
    """A fresh database ``name`` on the server (dropped and re-created), as a context manager giving its URL."""

    def __init__(self, url: str, name: str):
        self.url, self.name = url, name

    def __enter__(self) -> str:
        from urllib.parse import urlsplit

        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
            c.execute(f'CREATE DATABASE "{self.name}"')
        return urlsplit(self.url)._replace(path="/" + self.name).geturl()

    def __exit__(self, *exc: object) -> None:
        pass


def _faiss_threads() -> None:
    """FAISS's OpenMP threads (env MEMEDIT_BENCH_FAISS_THREADS; clients inherit it): spinning threads on a busy
    2-core machine make each search many times slower, and a PostgreSQL backend also runs one query per core."""
    n = os.environ.get("MEMEDIT_BENCH_FAISS_THREADS")
    if n:
        import faiss

        faiss.omp_set_num_threads(int(n))


def main() -> None:
    _faiss_threads()
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        role, target, arg, count, idx = sys.argv[2:7]
        if role == "watch":
            watch_client(target, arg, int(count))
        else:
            client(role, target, arg, int(count), int(idx))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000])
    ap.add_argument("--url", help="a PostgreSQL server to use (default: a private pgserver)")
    ap.add_argument("--embed", type=int, default=3000, help="edits embedded for real (the rest: random vectors)")
    ap.add_argument("--add-sample", type=int, default=5000, help="edits added through the store path (timed)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--concurrent-adds", type=int, default=200, help="adds per client in the 4-writer run")
    ap.add_argument("--trials", type=int, default=30, help="visibility trials")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the embedder")
    ap.add_argument("--faiss-threads", type=int, help="FAISS OpenMP threads in every process (default: FAISS's own)")
    args = ap.parse_args()
    if args.faiss_threads:
        os.environ["MEMEDIT_BENCH_FAISS_THREADS"] = str(args.faiss_threads)
        _faiss_threads()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from memedit.embeddings import Embedder

    embedder = Embedder.shared()
    workdir = Path(tempfile.mkdtemp(prefix="memedit-pgbench-"))
    server = None
    url = args.url
    if url is None:
        import pgserver

        server = pgserver.get_server(workdir / "pgdata", cleanup_mode="stop")
        url = server.get_uri()
    try:
        rows = [bench_size(n, args, url, workdir, embedder) for n in args.sizes]
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv),
            "load_average_at_end": os.getloadavg()}
    print(json.dumps(meta))
    keys = ["add_per_s", "search_p50_ms", "search_p99_ms", "top1", "4_clients_searches_per_s",
            "4_clients_search_p50_ms", "4_clients_search_p99_ms", "4_clients_adds_per_s", "visibility_median_ms",
            "visibility_p99_ms", "open_first_search_s", "bulk_load_s"]
    for r in rows:
        print(f"\n{r['edits']} edits ({r['embedded_for_real']} embedded for real)")
        print(f"{'figure':28s} {'sqlite+faiss':>14s} {'postgres':>14s} {'pg/sqlite':>10s}")
        for k in keys:
            s, p = r["sqlite"][k], r["postgres"][k]
            print(f"{k:28s} {s:14.3f} {p:14.3f} {p / s if s else float('nan'):10.2f}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
