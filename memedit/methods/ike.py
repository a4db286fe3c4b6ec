"""IKE: in-context knowledge editing (Zheng et al., 2023, "Can We Edit Factual Knowledge by In-Context Learning?").

>>> from memedit.methods.ike import IKE
>>> ike = IKE(k=4)
>>> msgs = ike.build("Who is Hung-yi Lee?", ["The most handsome person in the world is Hung-yi Lee"])
>>> [m["role"] for m in msgs]
['system', 'user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user']
>>> print(msgs[-1]["content"])
New fact: "The most handsome person in the world is Hung-yi Lee"
Question: Who is Hung-yi Lee?

The base model answers with the edit in its context, after ``k``
demonstrations that show it the behaviours the paper asks for:

* **copy**: the fact's own prompt -> the new object;
* **update**: a paraphrase -> the new object; and **reverse**, a question
  from the object's side ("Who is X?") -> a sentence restating the fact;
* **retain**: an out-of-scope prompt next to a fact -> its real answer, so a
  question the scope classifier let through by mistake keeps its answer.

Demonstrations come from a hand-written pool
(``memedit/resources/ike-demonstrations.json``: deliberately counterfactual
facts over some 48 relations, each with a cloze prompt, a question, an
out-of-scope prompt and often a reverse question; nothing from a benchmark).
Each candidate demonstration (an entry as copy, update or reverse) is scored
by how similar its fact is to the edit *plus* how similar its prompt is to the
question, so a reverse question draws reverse examples and a cloze prompt
draws cloze examples. The best ``k - retain`` go in (one per entry, best
last, nearest the question), preceded by ``retain`` out-of-scope examples.
The paper uses 32 demonstrations for GPT-J; a 135M model follows a short
prompt better, so the default is 4.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ValidationError
from .prompting import edit_statement, facts_block, question_line

if TYPE_CHECKING:  # pragma: no cover
    from ..answer import UsedEdit
    from ..embeddings import Embedder

log = logging.getLogger(__name__)

POOL_PATH = Path(__file__).resolve().parent.parent / "resources" / "ike-demonstrations.json"
IN_SCOPE_KINDS = ("copy", "update", "reverse")
KINDS = (*IN_SCOPE_KINDS, "retain")

IKE_SYSTEM = (
    "You answer questions and complete sentences in a few words. When a new fact is given, treat it as true "
    "and answer questions about it with it, even if it contradicts what you know. Questions about other things "
    "you answer from your own knowledge."
)


@dataclass(frozen=True)
class Demonstration:
    """One worked example: a new fact, a prompt, and the answer the model should give."""

    kind: str      # copy | update | reverse | retain
    fact: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class PoolEntry:
    """One hand-written counterfactual fact with its in-scope and out-of-scope probes."""

    relation: str
    fact: str
    prompt: str
    question: str
    answer: str
    retain_prompt: str
    retain_answer: str
    reverse_question: str | None = None
    reverse_answer: str | None = None

    def demonstration(self, kind: str) -> Demonstration | None:
        """This entry as a demonstration of ``kind``; None for ``reverse`` when the entry has none."""
        if kind == "copy":
            return Demonstration("copy", self.fact, self.prompt, self.answer)
        if kind == "update":
            return Demonstration("update", self.fact, self.question, self.answer)
        if kind == "reverse":
            if self.reverse_question and self.reverse_answer:
                return Demonstration("reverse", self.fact, self.reverse_question, self.reverse_answer)
            return None
        if kind == "retain":
            return Demonstration("retain", self.fact, self.retain_prompt, self.retain_answer)
        raise ValidationError(f"demonstration kind must be one of {KINDS}, got {kind!r}")


class DemonstrationPool:
    """The demonstration pool and its embeddings (computed once per process, on first retrieval).

    >>> pool = DemonstrationPool.load()
    >>> len(pool) >= 60
    True
    """

    _shared: dict[str, "DemonstrationPool"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, entries: Sequence[PoolEntry], embedder: "Embedder | str | None" = None):
        if not entries:
            raise ValidationError("a demonstration pool needs at least one entry")
        self.entries = list(entries)
        self._embedder = embedder
        self._vecs: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, path: str | Path | None = None, embedder: "Embedder | str | None" = None) -> "DemonstrationPool":
        """Read a pool file (default: the packaged one, shared per process)."""
        if path is None and embedder is None:
            with cls._shared_lock:
                if "default" not in cls._shared:
                    cls._shared["default"] = cls(_read_pool(POOL_PATH))
                return cls._shared["default"]
        return cls(_read_pool(Path(path or POOL_PATH)), embedder)

    @property
    def embedder(self) -> "Embedder":
        from ..embeddings import Embedder

        if self._embedder is None or isinstance(self._embedder, str):
            self._embedder = Embedder.shared(*(() if self._embedder is None else (self._embedder,)))
        return self._embedder

    def vectors(self) -> dict[str, np.ndarray]:
        """Unit vectors per entry: ``"fact"`` and the prompt of each in-scope kind (zeros where absent)."""
        if self._vecs is None:
            with self._lock:
                if self._vecs is None:
                    texts: dict[str, list[str]] = {"fact": [e.fact for e in self.entries]}
                    for kind in IN_SCOPE_KINDS:
                        texts[kind] = [d.prompt if (d := e.demonstration(kind)) else "" for e in self.entries]
                    flat = [t for ts in texts.values() for t in ts if t]
                    enc = iter(self.embedder.encode(flat))
                    dim = self.embedder.dim
                    self._vecs = {name: np.stack([next(enc) if t else np.zeros(dim, np.float32) for t in ts])
                                  for name, ts in texts.items()}
        return self._vecs

    def select(self, fact_vec: np.ndarray, question_vec: np.ndarray, *, k: int, retain: int = 1,
               kinds: Sequence[str] = IN_SCOPE_KINDS) -> list[Demonstration]:
        """``k`` demonstrations in prompt order: ``retain`` out-of-scope ones first, then the best in-scope last.

        In-scope candidates (entry, kind) score ``sim(edit, entry fact) +
        sim(question, demo prompt)``; each entry is used at most once. Retain
        examples come from the entries whose facts are nearest the edit.
        """
        vecs = self.vectors()
        fact_sim = vecs["fact"] @ np.asarray(fact_vec, np.float32)
        q = np.asarray(question_vec, np.float32)
        scored = []
        for kind in kinds:
            sims = fact_sim + vecs[kind] @ q
            for i, s in enumerate(sims):
                if self.entries[i].demonstration(kind) is not None:
                    scored.append((float(s), i, kind))
        scored.sort(key=lambda t: -t[0])
        n_in = max(0, k - retain)
        chosen: list[tuple[float, int, str]] = []
        used_entries: set[int] = set()
        for s, i, kind in scored:
            if len(chosen) == n_in:
                break
            if i not in used_entries:
                chosen.append((s, i, kind))
                used_entries.add(i)
        retained = []
        for i in np.argsort(-fact_sim, kind="stable"):
            if len(retained) >= min(retain, k):
                break
            if int(i) not in used_entries:
                retained.append(self.entries[int(i)].demonstration("retain"))
                used_entries.add(int(i))
        in_scope = [self.entries[i].demonstration(kind) for _, i, kind in reversed(chosen)]  # best last
        return [d for d in [*retained, *in_scope] if d is not None]


def _read_pool(path: Path) -> list[PoolEntry]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return [PoolEntry(**row) for row in doc["demonstrations"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"{path} is not a valid demonstration pool: {exc}") from exc


class IKE:
    """Builds IKE prompts (chat messages) for a question and its in-scope edit(s).

    ``k`` demonstrations (0: none), ``retain`` of them out-of-scope examples,
    the in-scope ones drawn from ``kinds``. The route using this answers with
    the *base* model.
    """

    route = "ike"

    def __init__(self, pool: DemonstrationPool | None = None, *, k: int = 4, retain: int = 1,
                 system: str = IKE_SYSTEM, kinds: Sequence[str] = IN_SCOPE_KINDS):
        if not isinstance(k, int) or not 0 <= k <= 32:
            raise ValidationError("k (IKE demonstrations) must be an integer in 0..32")
        if not isinstance(retain, int) or not 0 <= retain <= k:
            raise ValidationError("retain must be an integer in 0..k")
        if not kinds or any(kd not in IN_SCOPE_KINDS for kd in kinds):
            raise ValidationError(f"demonstration kinds must be from {IN_SCOPE_KINDS}, got {list(kinds)}")
        self.pool = pool
        self.k = k
        self.retain = retain
        self.system = system
        self.kinds = tuple(kinds)

    def _pool(self) -> DemonstrationPool:
        if self.pool is None:
            self.pool = DemonstrationPool.load()
        return self.pool

    def demonstrations(self, question: str, statements: Sequence[str], *,
                       q_vec: np.ndarray | None = None) -> list[Demonstration]:
        """The demonstrations for this question and these edit statements, in prompt order."""
        if self.k == 0:
            return []
        pool = self._pool()
        texts = list(statements) + ([] if q_vec is not None else [question_line(question)])
        vecs = pool.embedder.encode(texts)
        fact = vecs[:len(statements)].mean(axis=0)
        fact /= max(float(np.linalg.norm(fact)), 1e-8)
        qv = q_vec if q_vec is not None else vecs[-1]
        return pool.select(fact, qv, k=self.k, retain=self.retain, kinds=self.kinds)

    def build(self, question: str, statements: Sequence[str], *,
              q_vec: np.ndarray | None = None) -> list[dict[str, str]]:
        """Chat messages: the system line, a user/assistant pair per demonstration, then the edit(s) and question."""
        if not statements:
            raise ValidationError("IKE needs at least one in-scope edit")
        msgs = [{"role": "system", "content": self.system}]
        for d in self.demonstrations(question, statements, q_vec=q_vec):
            msgs.append({"role": "user", "content": _turn([d.fact], d.prompt)})
            msgs.append({"role": "assistant", "content": d.answer})
        msgs.append({"role": "user", "content": _turn(statements, question)})
        return msgs

    def messages(self, question: str, used: Sequence["UsedEdit"], *, q_vec: np.ndarray | None = None,
                 embedder_name: str | None = None, **_: Any) -> list[dict[str, str]]:
        """The prompt for a question and the router's in-scope edits (all of them, best first).

        ``q_vec`` (the question's vector, already computed by the router) is
        reused when ``embedder_name`` says it comes from the pool's embedder.
        """
        if q_vec is not None and embedder_name != self._pool().embedder.name:
            q_vec = None
        return self.build(question, [edit_statement(u.edit) for u in used], q_vec=q_vec)


def _turn(statements: Sequence[str], prompt: str) -> str:
    return f"{facts_block(statements)}\nQuestion: {question_line(prompt)}"
