"""Which in-scope route ``policy="auto"`` takes for a base model: the one that measured best.

>>> from memedit.route_choice import measured_route
>>> measured_route("smollm2-135m-instruct") in ("ike", "serac")
True
>>> measured_route("some-model-nobody-measured") is None
True

``memedit/resources/route-choice.json`` records, per registered base model,
the report-side figures of each in-scope route (``memedit eval run --side
report --mode batch``, greedy generation) and the route chosen from them: the
one with the higher mean of reliability and paraphrase by generation, locality
breaking ties. Models nobody measured get no entry; the router then answers
with IKE, so the user's own model (a LangChain chat model, a local
checkpoint) answers in-scope questions with the edits in its prompt.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ValidationError

CHOICE_PATH = Path(__file__).resolve().parent / "resources" / "route-choice.json"
ROUTES = ("ike", "serac")


@lru_cache(maxsize=1)
def load_choices(path: str | None = None) -> dict[str, Any]:
    """The recorded choices (``{"models": {name: {"route": ..., "figures": ...}}}``), validated."""
    p = Path(path) if path else CHOICE_PATH
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError(f"cannot read the route choices at {p}: {exc}") from exc
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict) or not all(isinstance(v, dict) and v.get("route") in ROUTES
                                               for v in models.values()):
        raise ValidationError(f"{p}: 'models' must map model names to objects with a route in {ROUTES}")
    return doc


def measured_route(model_name: str | None) -> str | None:
    """The route measured best for ``model_name`` (a registered name), or None if it was never measured."""
    if not model_name:
        return None
    entry = load_choices()["models"].get(str(model_name))
    return None if entry is None else str(entry["route"])


def choose(figures: dict[str, dict[str, float]]) -> str:
    """The route with the higher mean of reliability and paraphrase by generation; locality breaks ties.

    >>> choose({"ike": {"rel_gen": 0.8, "para_gen": 0.7, "loc": 1.0}, "serac": {"rel_gen": 1.0, "para_gen": 0.9, "loc": 1.0}})
    'serac'
    """
    def key(route: str) -> tuple[float, float]:
        f = figures[route]
        return ((f["rel_gen"] + f["para_gen"]) / 2, f["loc"])

    return max(sorted(figures), key=key)
