"""Per-probe results and their aggregation into the metrics of the field.

Definitions (one probe = one question asked after the edit):

* **probability-based** (CounterFact style): ``log p(prob_pos) > log p(prob_neg)``
  as the assistant's reply, scored by the backend that answers on the exact
  messages the route sends (:attr:`memedit.route.Prepared.messages`; for the
  base route the bare ``[user: question]``). Reliability / generalization:
  target_new beats the old answer; locality: the *verdict is unchanged*,
  i.e. "ground truth beats target_new" comes out the same under the routed
  prompt as for the bare model on the bare question (a small model that never
  knew the answer cannot lose it; what memedit owes is not to change it). The
  CounterFact "neighborhood" score itself (ground truth beats target_new) is
  reported beside it as ``prob_gt_wins``; portability: only
  where the expected answer is the new target (zsRE Subject_Aliasing), else
  not scored.
* **generation-based**: the greedy answer (at most the router's
  ``max_new_tokens``) contains an expected string, case-insensitively. For
  locality it is *unchanged*: the answer equals, token for token (exact text), the
  bare base model's greedy answer to the same question; ``contains_gt`` is
  reported beside it.
* **scope**: in-scope probes (reliability, generalization, portability) should
  use the case's edit; locality probes should use none. TP = in-scope probe
  that used its edit; FN = in-scope probe that did not; FP = probe that used
  an edit it should not (locality: any; in-scope: another case's edit).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from .datasets import PROBE_KINDS


@dataclass
class ProbeResult:
    case_id: str
    source: str
    kind: str
    question: str
    route: str
    in_scope: bool
    own_edit_used: bool
    wrong_edits_used: int
    own_scope_probability: float | None
    answer: str
    gen_success: bool
    prob_success: bool | None = None
    logprob_pos: float | None = None
    logprob_neg: float | None = None
    base_answer: str | None = None       # locality: the bare model's answer
    contains_gt: bool | None = None      # locality: the answer still contains the ground truth
    prob_gt_wins: bool | None = None     # locality: ground truth beats target_new (CounterFact neighborhood)
    sub_kind: str | None = None
    expected: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: the answers of the IKE demonstrations the prompt showed, and whether the answer repeats one instead of the edit's
    demo_answers: list[str] = field(default_factory=list)
    demo_leak: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(xs: Iterable[bool | None]) -> float | None:
    vals = [bool(x) for x in xs if x is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def scope_counts(results: Sequence[ProbeResult]) -> dict[str, Any]:
    """Scope decisions as precision / recall over the edits each answer used: the in-scope ones, and any a
    multi-hop answer's hops reached (a chain through an edited fact the question does not name)."""
    tp = sum(1 for r in results if r.in_scope and r.own_edit_used)
    fn = sum(1 for r in results if r.in_scope and not r.own_edit_used)
    fp = sum(1 for r in results if (not r.in_scope and (r.own_edit_used or r.wrong_edits_used))
             or (r.in_scope and r.wrong_edits_used))
    precision = round(tp / (tp + fp), 4) if tp + fp else None
    recall = round(tp / (tp + fn), 4) if tp + fn else None
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall}


def summarize(results: Sequence[ProbeResult]) -> dict[str, Any]:
    """Metrics for one group of probe results (overall, one route, or one dataset)."""
    out: dict[str, Any] = {"probes": len(results)}
    for kind in PROBE_KINDS:
        rs = [r for r in results if r.kind == kind]
        if not rs:
            continue
        m: dict[str, Any] = {"n": len(rs), "prob": _rate(r.prob_success for r in rs),
                             "n_prob": sum(1 for r in rs if r.prob_success is not None),
                             "gen": _rate(r.gen_success for r in rs)}
        if kind == "locality":
            m["contains_gt"] = _rate(r.contains_gt for r in rs)
            m["prob_gt_wins"] = _rate(r.prob_gt_wins for r in rs)
            m["routed_base"] = _rate(r.route == "base" for r in rs)
        else:
            m["routed_edit"] = _rate(r.own_edit_used for r in rs)
        out[kind] = m
    out["scope"] = scope_counts(results)
    shown = [r for r in results if r.demo_leak is not None]
    # answers that give a shown demonstration's answer and not the edit's (IKE's pool leaking): must stay 0
    out["demonstration_leaks"] = {"n": len(shown), "leaks": sum(1 for r in shown if r.demo_leak)}
    return out


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 2)


@dataclass
class EvalReport:
    """What :func:`~memedit.eval.evaluate` returns: the per-probe results and their summaries."""

    mode: str
    config: dict[str, Any]
    results: list[ProbeResult]
    cases: int
    seconds: float = 0.0

    @property
    def overall(self) -> dict[str, Any]:
        return summarize(self.results)

    @property
    def by_route(self) -> dict[str, Any]:
        routes = sorted({r.route for r in self.results})
        return {rt: summarize([r for r in self.results if r.route == rt]) for rt in routes}

    @property
    def by_source(self) -> dict[str, Any]:
        srcs = sorted({r.source for r in self.results})
        return {s: summarize([r for r in self.results if r.source == s]) for s in srcs}

    def timings(self) -> dict[str, Any]:
        route_ms = [sum(r.timings_ms.get(k, 0.0) for k in ("embed", "search", "classify")) for r in self.results]
        gen = {}
        for rt in sorted({r.route for r in self.results}):
            g = [r.timings_ms["generate"] for r in self.results if r.route == rt and "generate" in r.timings_ms]
            gen[rt] = {"p50": _pct(g, 0.5), "p99": _pct(g, 0.99), "n": len(g)}
        return {"routing_ms": {"p50": _pct(route_ms, 0.5), "p99": _pct(route_ms, 0.99)}, "generate_ms": gen}

    def to_dict(self, *, with_results: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "config": self.config, "cases": self.cases,
                             "seconds": round(self.seconds, 1), "overall": self.overall,
                             "by_route": self.by_route, "by_source": self.by_source, "timings": self.timings()}
        if with_results:
            d["results"] = [r.to_dict() for r in self.results]
        return d
