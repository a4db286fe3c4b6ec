"""A separate process that works on a store, for the crash and concurrency tests.

    python tests/store_worker.py writer STORE ACKFILE PREFIX [N]
    python tests/store_worker.py reader STORE SECONDS
    python tests/store_worker.py racer STORE TARGET [GOFILE]
    python tests/store_worker.py watcher STORE SECONDS OUTFILE     # searches, logging what each one saw

STORE is a SQLite path or a ``postgresql://`` URL (several processes on one
PostgreSQL database are the replicas of issue 7). A writer acknowledges each edit only after ``add`` returned, by appending its
number to ACKFILE and fsyncing: what is in ACKFILE must survive a SIGKILL.
Every line the worker prints is JSON, so the parent can follow it.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

torch.set_num_threads(1)  # several workers share two cores

from memedit import Edit  # noqa: E402
from memedit.errors import ConflictError, StoreError  # noqa: E402
from memedit.store.open import open_store as EditStore  # noqa: E402  (a path: SQLite; a URL: PostgreSQL)


def say(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def writer(path: str, ackfile: str, prefix: str, n: int) -> None:
    store = EditStore(path)
    store.embedder  # load before saying ready, so kills land in store code, not in start-up
    say(ready=True)
    rng = random.Random(prefix)  # the same steps every run: the tests' lower bounds on the edit count always hold
    ack = open(ackfile, "a")
    for i in range(n):
        try:
            _write_step(store, ack, prefix, rng, i)
        except StoreError as exc:
            if not path.startswith("postgresql://"):
                raise
            say(error=str(exc))  # the server went away mid-operation: not acknowledged, carry on
            continue
        ack.flush()
        os.fsync(ack.fileno())
    store.close()
    say(done=True)


def _write_step(store, ack, prefix: str, rng: random.Random, i: int) -> None:
    """One random step of a writer: forget, flush, a batch, or one fact edit (acknowledged in ``ack``)."""
    op = rng.random()
    if op < 0.08:
        live = store.list(status="active", limit=5)
        if live:
            try:
                store.forget(live[-1].id)
                ack.write(f"forgot {live[-1].id}\n")
            except ConflictError:
                pass
    elif op < 0.12:
        store.flush()  # index saves are a place to be killed too
    elif op < 0.2:
        batch = [Edit.text(f"{prefix} batch fact {i}.{j} is true.") for j in range(3)]
        for e in store.add_many(batch):
            ack.write(f"added {e.id} {e.statement}\n")
    else:
        e = store.add(Edit.fact(f"{prefix} subject {i % 7}", "The favourite colour of {} is", f"colour {i}"))
        ack.write(f"added {e.id} {e.sentence()}\n")


def reader(path: str, seconds: float) -> None:
    store = EditStore(path)
    store.embedder
    say(ready=True)
    end = time.time() + seconds
    searches = 0
    while time.time() < end:
        for hit in store.search("What is the favourite colour?", k=3):
            assert hit.edit.status == "active" and hit.edit.namespace == "default"
        store.list(limit=10)
        searches += 1
    store.close()
    say(done=True, searches=searches)


def racer(path: str, target: str, gofile: str | None = None) -> None:
    store = EditStore(path)
    store.embedder
    say(ready=True)
    while not os.path.exists(gofile or path + ".go"):
        time.sleep(0.01)
    e = store.add(Edit.fact("Acme Corp", "The CEO of {} is", target))
    store.close()
    say(done=True, id=e.id)


def watcher(path: str, seconds: float, outfile: str) -> None:
    """Search in a loop; log each search's start (CLOCK_MONOTONIC, shared by all processes) and the ids it saw."""
    store = EditStore(path)
    store.embedder
    qvec = store.embedder.encode(["What is the secret code of the vault?"])[0]
    say(ready=True)
    end = time.time() + seconds
    n = 0
    with open(outfile, "w") as out:
        while time.time() < end:
            t0 = time.monotonic()
            ids = [h.edit.id for h in store.search_vector(qvec, k=50)]
            out.write(json.dumps({"t0": t0, "ids": ids}) + "\n")
            n += 1
    store.close()
    say(done=True, searches=n)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "writer":
        writer(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 10_000)
    elif role == "reader":
        reader(sys.argv[2], float(sys.argv[3]))
    elif role == "racer":
        racer(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif role == "watcher":
        watcher(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit(f"unknown role {role}")
