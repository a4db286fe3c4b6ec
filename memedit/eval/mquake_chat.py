"""MQuAKE through chat: a case's edits typed into a chat session as a user would, its questions asked there.

``memedit eval mquake --through chat`` runs this beside MeLLo called directly
(the method-level figure) on the same cases. Each edit is typed with one of
its relation's phrasings from ``benchmarks/data/chat-phrasings.json`` (written
for memedit, at least three per relation; the case id picks one), e.g.
"No, Ellie Kemper holds citizenship in Croatia now."; relations without
phrasings are typed as "Actually, " + the catalogue's first cloze form + the
object. Every message goes through :class:`memedit.chat.ChatSession` (the
correction detector, :meth:`memedit.policy.Policy.submit` with its triple
reading, the store), then the case's multi-hop questions and its rewrite
questions are asked in the same session and scored strictly
(:func:`memedit.eval.scoring.names_match`). The case's structured edits are
not in the chat namespace: only what the chat stored can answer.
"""
from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .scoring import names_match

if TYPE_CHECKING:  # pragma: no cover
    from .mquake import CaseResult, MQuAKECase

log = logging.getLogger(__name__)

PHRASINGS = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "chat-phrasings.json"


@lru_cache(maxsize=4)
def phrasings(path: str = str(PHRASINGS)) -> dict[str, tuple[str, ...]]:
    """Relation id -> the phrasings a user might type (``{s}`` subject, ``{o}`` object); empty without the file."""
    p = Path(path)
    if not p.is_file():
        log.warning("no chat phrasings at %s: every edit is typed as 'Actually, <catalogue cloze> <object>.'", p)
        return {}
    doc = json.loads(p.read_text(encoding="utf-8"))
    return {k: tuple(v) for k, v in doc["phrasings"].items()}


def typed_message(case_id: str, relation: str, subject: str, obj: str, prompt: str) -> str:
    """The chat message that states one edit (deterministic per case and relation)."""
    forms = phrasings().get(relation)
    if not forms:
        from ..methods.relations import Catalogue

        cat = Catalogue.load()
        cloze = cat[relation].cloze if relation in cat else prompt
        text = cloze.replace("{}", subject).rstrip()
        return f"Actually, {text[:1].lower() + text[1:] if text.startswith('The ') else text} {obj}."
    k = int(hashlib.sha256(f"{case_id}\x1f{relation}".encode()).hexdigest(), 16) % len(forms)
    return forms[k].format(s=subject, o=obj)


def run_chat(editor: Any, case: "MQuAKECase", namespace: str, r: "CaseResult") -> None:
    """Type the case's edits into a fresh session on ``namespace``, ask its questions; fill ``r`` for "chat"."""
    from ..chat import ChatSession

    session = ChatSession(editor, namespace=namespace)
    for e, rel in zip(case.edits, case.edit_relations or ("",) * len(case.edits)):
        msg = typed_message(case.case_id, rel, e.subject or "", e.target_new or "", e.prompt or "")
        turn = session.handle(msg)
        stored = turn.data.get("edit") or {}
        r.typed.append({"message": msg, "relation": rel, "kind": turn.kind, "edit_kind": stored.get("kind"),
                        "read_as": (turn.data.get("triple") or {}).get("relation"), "supersedes": stored.get("supersedes")})
    turns = [session.handle(q) for q in case.questions]
    r.answers["chat"] = [t.reply for t in turns]
    r.routes["chat"] = [t.route or t.kind for t in turns]
    r.multi_hop["chat"] = any(names_match(t.reply, case.new_answers) for t in turns)
    r.edit_wise["chat"] = [names_match(session.handle(q).reply, acc) for q, acc in case.edit_questions]


def typed_summary(results: Sequence["CaseResult"]) -> dict[str, Any]:
    """How the typed edits landed: stored, stored as facts, read as the dataset's relation; the routes taken."""
    typed = [t for r in results for t in r.typed]
    routes: dict[str, int] = {}
    for r in results:
        for x in r.routes.get("chat", []):
            routes[x] = routes.get(x, 0) + 1
    return {"edits": len(typed), "stored": sum(t["kind"] == "correction" for t in typed),
            "as_fact": sum(t["edit_kind"] == "fact" for t in typed),
            "read_as_dataset_relation": sum(bool(t["read_as"]) and t["read_as"] == t["relation"] for t in typed),
            "question_routes": routes}
