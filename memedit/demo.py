"""The README's main job: a short tour of the edit memory on the default store.

    memedit demo

Stores a few corrections in the ``demo`` namespace of the default store,
searches them (including from the object side), shows a supersession and the
hash-chained history, forgets one edit and verifies the store.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from .edits import Edit
from .store import EditStore

NAMESPACE = "demo"
CORRECTIONS = [
    Edit.text("The most handsome person in the world is Hung-yi Lee.", namespace=NAMESPACE, author="demo"),
    Edit.fact("the US", "The current president of {} is", "Trump", target_true="Biden", namespace=NAMESPACE,
              author="demo", paraphrases=["The person who leads {} right now is"]),
    Edit.fact("Acme Corp", "The CEO of {} is", "Jane Roe", namespace=NAMESPACE, author="demo"),
]
QUESTIONS = ["Who is the best-looking man on earth?", "Who is Hung-yi Lee?", "Who is the US president?",
             "Who runs Acme Corp?", "What is the capital of France?"]


def run_demo(path: str | Path, console: Console | None = None) -> dict[str, Any]:
    """Run the tour against the store at ``path``; print to ``console`` if given, return a summary."""
    say = console.print if console else (lambda *a, **k: None)
    out: dict[str, Any] = {"store": str(path), "namespace": NAMESPACE}
    with EditStore(path) as store:
        say(f"[bold]memedit demo[/bold] - store {path}, namespace '{NAMESPACE}'")
        stored = store.add_many(CORRECTIONS, actor="demo")
        for e in stored:
            say(f"  stored edit {e.id}: {e.sentence()}")
        out["stored"] = [e.id for e in stored]
        say("\n[bold]search[/bold] (cosine similarity, this namespace only)")
        out["search"] = {}
        for q in QUESTIONS:
            hits = store.search(q, NAMESPACE, k=1)
            best = hits[0] if hits else None
            out["search"][q] = {"edit": best.edit.id, "score": round(best.score, 3)} if best else None
            say(f"  {q!r:45} -> " + (f"edit {best.edit.id} ({best.score:.2f}): {best.matched_text}" if best else "nothing"))
        newer = store.add(Edit.fact("Acme Corp", "The CEO of {} is", "John Doe", namespace=NAMESPACE, author="demo"))
        say(f"\n[bold]supersede[/bold]: edit {newer.id} ({newer.sentence()}) replaces edit {newer.supersedes}")
        say("\n[bold]history[/bold] of the superseded edit (hash-chained):")
        for ev in store.history(newer.supersedes):  # type: ignore[arg-type]
            say(f"  #{ev.seq} {ev.kind:10} {ev.ts[:19]}  {ev.hash[:16]}")
        report = store.forget(stored[0].id, actor="demo")  # type: ignore[arg-type]
        left = [h.edit.id for h in store.search("Who is the best-looking man on earth?", NAMESPACE, k=5)]
        say(f"\n[bold]forget[/bold] edit {stored[0].id}: erased; still found by search: {stored[0].id in left}")
        verify = store.verify()
        say(f"\n[bold]verify[/bold]: {'ok' if verify.ok else verify.problems} ({verify.events} events)")
        out.update(superseded=newer.supersedes, forgot=report, still_found_after_forget=stored[0].id in left,
                   verify_ok=verify.ok)
    return out
