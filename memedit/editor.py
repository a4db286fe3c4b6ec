"""The facade users meet first.

>>> from memedit import Editor
>>> ed = Editor(store="stores/default.db")                                   # doctest: +SKIP
>>> e = ed.edit("The most handsome person in the world is Hung-yi Lee")      # doctest: +SKIP
>>> ed.search("Who is the best-looking man?")[0].edit.id == e.id             # doctest: +SKIP
True
>>> ed.forget(e.id)                                                          # doctest: +SKIP

This first shape covers the memory (edit, search, history, forget); answering
through the memory (``ask``) and committing to the weights build on it.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from .config import DEFAULT_NAMESPACE, default_store_path
from .edits import Edit
from .store import EditStore, Event, SearchHit


class Editor:
    """Corrections in, answers out. Owns (or borrows) an :class:`EditStore`."""

    def __init__(self, store: EditStore | str | os.PathLike[str] | None = None, *,
                 namespace: str = DEFAULT_NAMESPACE, author: str | None = None):
        self._owns_store = not isinstance(store, EditStore)
        self.store = store if isinstance(store, EditStore) else EditStore(store or default_store_path())
        self.namespace = namespace
        self.author = author

    def edit(self, statement: str | None = None, *, subject: str | None = None, prompt: str | None = None,
             target_new: str | None = None, target_true: str | None = None, paraphrases: Iterable[str] = (),
             namespace: str | None = None, author: str | None = None, source: str | None = None,
             status: str = "active") -> Edit:
        """Store a correction: free text (``statement``) or a fact (``subject``, ``prompt``, ``target_new``)."""
        ns = namespace or self.namespace
        who = author or self.author
        if prompt is not None or subject is not None or target_new is not None:
            edit = Edit.fact(subject, prompt, target_new, target_true=target_true,  # type: ignore[arg-type]
                             paraphrases=paraphrases, statement=statement, namespace=ns, author=who, source=source)
        else:
            edit = Edit.text(statement, namespace=ns, author=who, source=source)  # type: ignore[arg-type]
        return self.store.add(edit, status=status)

    def search(self, query: str, *, namespace: str | None = None, k: int = 5) -> list[SearchHit]:
        return self.store.search(query, namespace or self.namespace, k=k)

    def history(self, edit_id: int) -> list[Event]:
        return self.store.history(edit_id)

    def forget(self, edit_id: int, *, actor: str | None = None) -> dict[str, Any]:
        return self.store.forget(edit_id, actor=actor or self.author)

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> "Editor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
