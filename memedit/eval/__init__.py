"""Evaluation of memedit on knowledge-editing benchmarks (CounterFact, zsRE/KnowEdit).

>>> from memedit.eval import load_cases, sample, evaluate        # doctest: +SKIP
>>> cases = sample(load_cases("../shared/data/zsre/zsre-dev.jsonl", "zsre").cases, 20, seed=0)  # doctest: +SKIP
>>> report = evaluate(lambda store: Editor(store=store, policy="ike"), cases)  # doctest: +SKIP
>>> report.overall["reliability"]["prob"]                         # doctest: +SKIP
"""
from .datasets import EvalCase, LoadResult, Probe, load_cases, load_counterfact, load_zsre, sample
from .metrics import EvalReport, ProbeResult, summarize
from .runner import evaluate

__all__ = ["EvalCase", "EvalReport", "LoadResult", "Probe", "ProbeResult", "evaluate", "load_cases",
           "load_counterfact", "load_zsre", "sample", "summarize"]
