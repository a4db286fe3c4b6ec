"""memedit: correct what a language model knows, keep the corrections safe, see and undo every one.

>>> from memedit import Edit, EditStore
>>> store = EditStore("stores/default.db")                     # doctest: +SKIP
>>> store.add(Edit.text("The CEO of Acme is Jane Roe now."))  # doctest: +SKIP
"""
from .edits import Edit
from .errors import ConflictError, MemeditError, ModelNotAvailableError, NotFoundError, StoreError, ValidationError

__version__ = "0.1.0"
__all__ = [
    "Edit", "EditStore", "SearchHit", "Editor", "MemeditError", "ValidationError", "NotFoundError",
    "ConflictError", "StoreError", "ModelNotAvailableError", "__version__",
]


def __getattr__(name: str):  # the store (numpy, FAISS) and the facade (models) load only when asked for
    if name == "Editor":
        from .editor import Editor

        return Editor
    if name in ("EditStore", "SearchHit"):
        from . import store

        return getattr(store, name)
    raise AttributeError(name)
