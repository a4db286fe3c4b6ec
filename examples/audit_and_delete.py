"""Audit and delete through the HTTP API: list, history, approve, forget.

    python examples/audit_and_delete.py                               # a throw-away store and server
    python examples/audit_and_delete.py --url http://127.0.0.1:8765 --token me_...   # a running 'memedit serve'

Without ``--url`` the script makes a temporary store with three corrections
(one pending), serves it with ``memedit``'s app on a free local port, and then
talks to it exactly as any client would: JSON over HTTP with a Bearer token.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

log = logging.getLogger("audit_and_delete")


def local_server() -> tuple[str, str]:
    """A temporary store with a few edits, served on 127.0.0.1; returns (url, admin token)."""
    import uvicorn

    from memedit import Edit, EditStore
    from memedit.web.app import create_app
    from memedit.web.auth import TokenFile

    tmp = Path(tempfile.mkdtemp(prefix="memedit-audit-"))
    store = EditStore(tmp / "audit.db")
    store.add(Edit.fact("the US", "The current president of {} is", "Trump", author="alice",
                        source="chat: no, the president is Trump now"))
    store.add(Edit.text("The CEO of Acme is Jane Roe.", author="bob", source="chat"), status="pending")
    store.add(Edit.text("The moon is made of cheese.", author="mallory", source="chat"))
    tokens, secret = TokenFile.open(tmp / "audit.tokens.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, tokens=tokens), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", secret  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running 'memedit serve' (default: start a throw-away one)")
    ap.add_argument("--token", help="an API token with write permission for the namespace")
    ap.add_argument("--namespace", default="default")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    url, token = (args.url, args.token) if args.url else local_server()
    if not token:
        ap.error("--token is required with --url")
    ns = args.namespace
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
        # 1. list: every live edit with its provenance
        page = api.get("/api/edits", params={"namespace": ns, "status": ["active", "pending"]}).raise_for_status().json()
        log.info("%d live edits in %r:", page["total"], ns)
        for e in page["edits"]:
            log.info("  #%s %-8s %-45s by %s (source: %s)", e["id"], e["status"], e["sentence"], e["author"], e["source"])

        # 2. history of one edit, each event's hash checked by the server
        first = page["edits"][-1]
        detail = api.get(f"/api/edits/{first['id']}").raise_for_status().json()
        log.info("history of #%s (chain %s):", first["id"], "verified" if detail["chain_ok"] else "BROKEN")
        for h in detail["history"]:
            log.info("  %s %-8s by %s  %s", h["ts"][:19], h["kind"], h["actor"] or "-", h["hash"][:12])

        # 3. approve what waits in the review queue
        for e in api.get("/api/edits", params={"namespace": ns, "status": "pending"}).json()["edits"]:
            approved = api.post(f"/api/edits/{e['id']}/approve").raise_for_status().json()
            log.info("approved #%s: now %s", e["id"], approved["status"])

        # 4. find a bad correction by meaning and forget it (confirmed by repeating its id)
        hits = api.get("/api/search", params={"namespace": ns, "q": "What is the moon made of?", "k": 1}).json()
        if hits:
            bad = hits[0]["edit"]
            report = api.post(f"/api/edits/{bad['id']}/forget", json={"confirm": bad["id"], "reason": "nonsense"})
            log.info("forgot #%s (%r): %s", bad["id"], bad["sentence"], report.raise_for_status().json())
            after = api.get("/api/search", params={"namespace": ns, "q": "What is the moon made of?", "k": 1}).json()
            log.info("search afterwards finds: %s", [h["edit"]["sentence"] for h in after] or "nothing")
            log.info("its record now: %s", api.get(f"/api/edits/{bad['id']}").json()["edit"]["status"])


if __name__ == "__main__":
    main()
