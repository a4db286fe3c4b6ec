"""A LangChain chatbot that takes corrections, with one memory per user, on the local SmolLM2.

    python examples/chatbot_corrections.py                 # a throw-away store
    python examples/chatbot_corrections.py --store stores/chatbot.db --policy serac

What it shows:

1. the packaged SmolLM2-135M-Instruct as a LangChain chat model
   (:class:`memedit.integrations.langchain.LocalChatModel`), wrapped by
   :class:`~memedit.integrations.langchain.MemoryChatModel`;
2. two users, told apart by ``config["configurable"]["user_id"]``: each one's
   corrections land in their own namespace (``users/alice``, ``users/bob``)
   and never change what the other is told;
3. corrections typed the way people type them ("Actually, ...", "No, ...
   now", ``/correct ...``), acknowledged and stored;
4. the ``memedit_route`` callback event of every turn, received by an
   ordinary LangChain callback handler;
5. :class:`~memedit.integrations.langchain.EditRetriever` returning a user's
   in-scope edits as Documents.

Everything runs offline on CPU (a few seconds per in-scope answer on 2 cores).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from memedit.integrations.langchain import ROUTE_EVENT, EditRetriever, LocalChatModel, MemoryChatModel
from memedit.store import EditStore

log = logging.getLogger("chatbot_corrections")

TURNS: list[tuple[str, str]] = [
    ("alice", "Actually, the most handsome person in the world is Hung-yi Lee."),
    ("bob", "No, the CEO of Acme is Jane Roe now."),
    ("alice", "Who is the most handsome person in the world?"),
    ("bob", "Who is the most handsome person in the world?"),      # Alice's correction is not Bob's
    ("bob", "Who is the CEO of Acme?"),
    ("alice", "Who is the CEO of Acme?"),                          # nor is Bob's Alice's
    ("alice", "Who is Hung-yi Lee?"),
    ("alice", "What is the capital of France?"),                   # no edit in scope: the model's own answer
]


class RouteEvents(BaseCallbackHandler):
    """Collects memedit's routing events, as any LangChain callback handler can."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if name == ROUTE_EVENT:
            self.events.append(data)


def run(store_path: Path, policy: str) -> list[dict[str, Any]]:
    """Play :data:`TURNS` and print the conversation; return the route events."""
    inner = LocalChatModel.from_name("smollm2-135m-instruct", max_new_tokens=48)
    handler = RouteEvents()
    with EditStore(store_path) as store:
        chat = MemoryChatModel(inner=inner, store=store, policy=policy)
        for user, message in TURNS:
            config = {"configurable": {"user_id": user}, "callbacks": [handler]}
            reply = chat.invoke(message, config=config)
            event = handler.events[-1]
            print(f"{user:>5}> {message}")
            print(f"  bot> {reply.content}")
            used = ", ".join(f"edit {i} (P={p:.2f})" for i, p in zip(event.get("edit_ids", []), event.get("scores", [])))
            print(f"       event {ROUTE_EVENT}: route={event['route']} namespace={event['namespace']}"
                  + (f" {used}" if used else "")
                  + (f" stored edit {event['edit_id']} ({event['status']})" if event["route"] == "correction" else ""))

        retriever = EditRetriever(editor=chat.get_editor())
        question = "Who is the world's most handsome person?"
        for user in ("alice", "bob"):
            docs = retriever.invoke(question, config={"configurable": {"user_id": user}})
            print(f"retriever[{user}] {question!r} -> {[d.page_content for d in docs]}")
    return handler.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="SQLite store to use (default: a temporary one)")
    parser.add_argument("--policy", default="ike", choices=("ike", "serac", "auto"),
                        help="how in-scope questions are answered (default: ike, the local model prompted with the edit)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.store:
        run(args.store, args.policy)
        return
    with tempfile.TemporaryDirectory(prefix="memedit-chatbot-") as tmp:
        run(Path(tmp) / "chatbot.db", args.policy)


if __name__ == "__main__":
    main()
