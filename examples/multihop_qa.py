"""An updated fact changes a two-hop answer: MeLLo on the edit memory, with the local SmolLM2.

    python examples/multihop_qa.py                      # a throw-away store
    python examples/multihop_qa.py --store stores/multihop.db --trace

What it shows:

1. a two-hop question ("the capital of the country Angela Merkel is a citizen
   of") answered before any edit, through the router (route ``base``: no fact
   is stored, so the bare model answers);
2. one stored correction ("Angela Merkel is a citizen of Kenya");
3. the same question again: the router sends it to MeLLo (route ``mello``),
   which decomposes it without the model (entity + relation chain from the
   relation catalogue), answers hop 1 from the stored edit and hop 2 with the
   model's single-hop answer about the *new* country;
4. the hop trace (``--trace``, or ``memedit ask --trace`` on the command line).

Everything runs offline on CPU (a few seconds on 2 cores).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from memedit import Edit, EditStore
from memedit.methods.mello import format_trace
from memedit.route import Router

log = logging.getLogger("multihop_qa")

QUESTION = "What is the capital of the country that Angela Merkel is a citizen of?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=None, help="store file (default: a temporary one)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--trace", action="store_true", help="print MeLLo's hop trace")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "multihop.db"
        with EditStore(path) as store:
            ns = "multihop-example"
            store.create_namespace(ns)
            router = Router(store, args.model, policy="ike")
            before = router.answer(QUESTION, ns)
            log.info("Q: %s\nbefore the edit [%s]: %s", QUESTION, before.route, before.text)
            edit = store.add(Edit.fact("Angela Merkel", "{} is a citizen of", "Kenya", target_true="Germany",
                                       namespace=ns))
            log.info("stored edit #%s: %s", edit.id, edit.sentence())
            after = router.answer(QUESTION, ns)
            log.info("after the edit [%s]: %s (edits used: %s)", after.route, after.text,
                     [u.edit.id for u in after.used])
            if args.trace:
                log.info("%s", format_trace(after.trace))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
