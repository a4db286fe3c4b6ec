"""Evaluate the weight editors (ROME, MEMIT, EMMET) on CounterFact-format records, as in the ROME paper.

>>> from memedit.eval.weights import evaluate_weight_edits, load_counterfact
>>> from memedit.models.registry import load_causal_lm
>>> model, tok = load_causal_lm("smollm2-135m-instruct")                                # doctest: +SKIP
>>> recs = load_counterfact("../shared/data/counterfact/counterfact-dev.jsonl", n=100)  # doctest: +SKIP
>>> report = evaluate_weight_edits(model, tok, recs, scenarios=["rome", "memit"])       # doctest: +SKIP
>>> report["scenarios"]["rome"]["scores"]["efficacy"]                                  # doctest: +SKIP
100.0

Scores per record (probability-based: mean log-probability per target token):

* **efficacy** (ES): p(new) > p(true) on the edit prompt;
* **paraphrase** (PS): p(new) > p(true) on the rephrased prompt;
* **neighborhood** (NS): p(true) > p(new) on a prompt about another subject
  that has the same true object; compare with the unedited model's NS;
* **gen_efficacy** / **gen_paraphrase**: greedy decoding starts with the new object;
* **perplexity**: on held-out prose (the gates' text) before and after.

Chat scores (``chat=True``, issue 19): what a user of the chatbot gets. Each
record becomes a fact edit and is asked its questions
(:func:`memedit.chat_check.edit_questions`: the direct question from the
relation catalogue, paraphrase questions) as the router's base / weights
route asks them (chat template, greedy, ``chat_max_new_tokens``):

* **chat_efficacy**: the direct question's answer contains the new object
  (strict scorer, word boundaries, anywhere in the answer);
* **chat_paraphrase**: the share of paraphrase questions whose answer does;
* **subject_kept**: the share of records whose name probe ("Tell me about X.")
  still writes the subject's name if the unedited model's answer did, and
  none of whose answers misspells it (the commit gate's rule,
  :func:`memedit.chat_check.name_checks`);
* **chat_unrelated** (per scenario, after all its edits; not for ``rome``,
  whose edits are reverted one by one): of the unrelated questions (the gates'
  probe set and the records' relation neighbours) answered right by the
  unedited model, the share still answered right.

Scenarios: ``rome`` (each record applied alone, scored, reverted bit-identically),
``rome-sequential`` (all records applied one after another, scored at the end, with the
``sequential`` preset a ROME commit uses: :data:`memedit.methods.rome.hparams.ROME_PRESETS`),
``memit`` / ``emmet`` (all records in one batch). The model leaves every
scenario with its original weights.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import ValidationError
from .scoring import answer_matches

log = logging.getLogger(__name__)
SCENARIOS = ("rome", "rome-sequential", "memit", "emmet")
SCORE_KEYS = ("efficacy", "paraphrase", "neighborhood", "gen_efficacy", "gen_paraphrase", "chat_efficacy",
              "chat_paraphrase", "subject_kept")
CHAT_MAX_NEW_TOKENS = 48


def load_counterfact(path: str | Path, n: int | None = None, offset: int = 0,
                     side: str = "all") -> list[dict[str, Any]]:
    """CounterFact records (``prompt`` with ``{}`` or the subject, ``subject``, ``target_new``,
    ``ground_truth``, ``rephrase_prompt``, ``locality_prompt``), skipping ones whose subject is not in the prompt.

    ``side``: only the records on that side of the project's tune / report split
    (:mod:`memedit.eval.splits`); ``offset`` and ``n`` count records on that side.
    """
    from .splits import check_side, default_split

    check_side(side)
    split = default_split()
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"no such data file: {path}")
    recs: list[dict[str, Any]] = []
    seen = 0
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            rec = json.loads(line)
            if side != "all" and split.side_of_subject(str(rec.get("subject", ""))) != side:
                continue
            seen += 1
            if seen <= offset:
                continue
            missing = [k for k in ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt",
                                   "locality_prompt") if not rec.get(k)]
            if missing:
                raise ValidationError(f"{path}:{i + 1}: not a CounterFact record (missing {missing})")
            rec["prompt"] = rec["prompt"].replace("{}", rec["subject"])
            if rec["subject"] not in rec["prompt"]:
                continue
            recs.append(rec)
            if n is not None and len(recs) >= n:
                break
    return recs


def score_records(model: Any, tok: Any, recs: Sequence[dict[str, Any]], generate: bool = True) -> list[dict[str, Any]]:
    """Per-record probability comparisons (and greedy generations) on the model's current weights."""
    from ..methods.rome.measure import greedy_continuations, target_logprobs

    prompts, targets = [], []
    for r in recs:
        for p in (r["prompt"], r["rephrase_prompt"], r["locality_prompt"]):
            prompts += [p, p]
            targets += [r["target_new"], r["ground_truth"]]
    lps = target_logprobs(model, tok, prompts, targets)
    gens = greedy_continuations(model, tok, [x for r in recs for x in (r["prompt"], r["rephrase_prompt"])],
                                max_new_tokens=6) if generate else None
    out = []
    for i, r in enumerate(recs):
        e_new, e_true, p_new, p_true, n_new, n_true = lps[6 * i: 6 * i + 6]
        row = {"case_id": r.get("case_id"), "efficacy": e_new > e_true, "paraphrase": p_new > p_true,
               "neighborhood": n_true > n_new, "lp_new": e_new, "lp_true": e_true}
        if gens is not None:
            want = [r["target_new"]]  # the continuation must begin with the new object, on a word boundary
            row["gen_efficacy"] = answer_matches(gens[2 * i], want, anchored=True)
            row["gen_paraphrase"] = answer_matches(gens[2 * i + 1], want, anchored=True)
            row["generation"] = gens[2 * i]
        out.append(row)
    return out


def _as_edit(rec: dict[str, Any]) -> Any:
    from ..edits import Edit
    from ..methods.rome import as_request

    req = as_request(rec)
    return Edit.fact(req.subject, req.template, req.target_new, target_true=req.target_true)


def chat_rows(model: Any, tok: Any, recs: Sequence[dict[str, Any]], rows: list[dict[str, Any]],
              base: Sequence[dict[str, Any]] | None = None,
              max_new_tokens: int = CHAT_MAX_NEW_TOKENS) -> None:
    """Add the chat scores to ``rows`` (one per record, in place); ``base``: the unedited model's rows.

    Without ``base`` (the unedited model itself) ``subject_kept`` is 100% by definition.
    """
    from ..chat_check import answer_gives, edit_questions, name_checks
    from ..chat_gates import answers
    from ..models.backends import LocalLM

    lm = LocalLM(model, tok, max_new_tokens=max_new_tokens)
    edits = [_as_edit(r) for r in recs]
    questions = [edit_questions(e) for e in edits]
    asked = answers(lm, [p for q in questions for p in (q.direct, *q.paraphrases, *q.names)])
    for i, (e, q, row) in enumerate(zip(edits, questions, rows)):
        row["chat_efficacy"] = answer_gives(asked[q.direct], q.direct, e)
        row["chat_paraphrase"] = (sum(answer_gives(asked[p], p, e) for p in q.paraphrases) / len(q.paraphrases)
                                  if q.paraphrases else float(row["chat_efficacy"]))
        row["chat_answers"] = {p: asked[p] for p in (q.direct, *q.paraphrases, *q.names)}
        if base is None:
            row["subject_kept"] = True
        else:
            before = base[i]["chat_answers"]
            row["subject_kept"] = all(r["ok"] for r in name_checks(q, e.subject or "", before, asked))


def unrelated_stability(model: Any, tok: Any, recs: Sequence[dict[str, Any]],
                        before: dict[str, str] | None = None) -> tuple[float | None, dict[str, str]]:
    """(% of unrelated questions right before that are still right, this model's answers); None without ``before``."""
    from ..chat_gates import answers, chat_questions
    from ..models.backends import LocalLM
    from ..eval.scoring import answer_matches

    plan = chat_questions([_as_edit(r) for r in recs])
    now = answers(LocalLM(model, tok, max_new_tokens=24), plan.unrelated_prompts())
    if before is None:
        return None, now
    right = [(q, exp) for q, exp in plan.unrelated if answer_matches(before[q], exp[:1], exp[1:])]
    kept = [answer_matches(now[q], exp[:1], exp[1:]) for q, exp in right]
    return (round(100.0 * sum(kept) / len(kept), 1) if kept else None), now


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Percentages of records passing each score (a fractional score, chat_paraphrase, is averaged)."""
    if not rows:
        return {}
    return {k: round(100.0 * sum(float(r[k]) for r in rows) / len(rows), 1) for k in SCORE_KEYS if k in rows[0]}


def _heldout() -> list[str]:
    from ..gates import _resource

    return _resource("gate-heldout.json")


def evaluate_weight_edits(model: Any, tok: Any, recs: Sequence[dict[str, Any]], *,
                          scenarios: Sequence[str] = SCENARIOS, rome_hparams: Any = None, batch_hparams: Any = None,
                          stats_tokens: int = 100_000, stats_options: dict[str, Any] | None = None,
                          generate: bool = True, chat: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the ``scenarios`` on ``recs``; returns a JSON-ready report (scores, perplexity, timings).

    ``rome_hparams`` / ``batch_hparams``: keyword overrides (dicts) of the
    family defaults (:class:`RomeHParams`, :class:`MemitHParams`,
    :class:`EmmetHParams`). ``stats_options``: extra keywords for
    :func:`memedit.methods.stats.second_moments` (``texts`` for another corpus).
    ``chat``: add the chat scores (see the module docstring; slower: a few
    generated answers per record).
    """
    from tqdm.auto import tqdm

    from ..gates import perplexity
    from ..methods import emmet, memit, rome
    from ..methods.deltas import apply_deltas, restore, snapshot
    from ..methods.emmet import EmmetHParams
    from ..methods.memit import MemitHParams
    from ..methods.rome import RomeHParams, contexts_for
    from ..methods.stats import second_moments
    from ..models.arch import arch_for

    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValidationError(f"unknown scenario(s) {unknown}; use {SCENARIOS}")
    if not recs:
        raise ValidationError("no records to evaluate")
    rome_hp = RomeHParams.for_model(model, stats_tokens=stats_tokens, **(rome_hparams or {}))
    # many edits into the same weights: the settings a ROME commit uses (overrides still apply on top)
    rome_seq_hp = RomeHParams.for_model(model, preset="sequential", stats_tokens=stats_tokens, **(rome_hparams or {}))
    batch_over = dict(batch_hparams or {})
    memit_hp = MemitHParams.for_model(model, stats_tokens=stats_tokens,
                                      **{k: v for k, v in batch_over.items() if k != "emmet_lambda"})
    emmet_hp = EmmetHParams.for_model(model, stats_tokens=stats_tokens, **batch_over)
    # statistics only for the layers the chosen scenarios edit (computing unused ones costs minutes)
    layers = sorted({*([rome_hp.layer] if {"rome", "rome-sequential"} & set(scenarios) else []),
                     *(memit_hp.layers if {"memit", "emmet"} & set(scenarios) else [])})
    t0 = time.perf_counter()
    stats = second_moments(model, tok, layers, **{"n_tokens": stats_tokens, **(stats_options or {})})
    report: dict[str, Any] = {"n": len(recs), "stats_layers": layers,
                              "stats_seconds_load_or_compute": round(time.perf_counter() - t0, 2), "scenarios": {}}
    contexts_for(model, tok, rome_hp)  # sampled (or loaded) once, outside the timings
    heldout = _heldout()
    ppl_base = perplexity(model, tok, heldout)
    base_rows = score_records(model, tok, recs, generate=generate)
    unrelated_base: dict[str, str] = {}
    if chat:
        chat_rows(model, tok, recs, base_rows)
        _, unrelated_base = unrelated_stability(model, tok, recs)

    def scored(rows: list[dict[str, Any]], subset: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """``rows`` with the chat scores added (records ``subset`` of ``recs``, default all)."""
        if chat:
            idx = list(subset) if subset is not None else list(range(len(recs)))
            chat_rows(model, tok, [recs[i] for i in idx], rows, [base_rows[i] for i in idx])
        return rows

    report["unedited"] = {"scores": summarise(base_rows), "perplexity": round(ppl_base, 3)}
    if chat:  # the unedited answers the chat scores compare with
        report["unedited"]["per_record"] = base_rows
    arch = arch_for(model)
    pristine = snapshot(model, [arch.weight_name(layer) for layer in layers])

    def finish(name: str, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        ppl = perplexity(model, tok, heldout)
        scores = summarise(scored(rows))
        if chat:
            scores["chat_unrelated"] = unrelated_stability(model, tok, recs, unrelated_base)[0]
        restore(model, pristine)
        report["scenarios"][name] = {"scores": scores, "perplexity": round(ppl, 3),
                                     "perplexity_change_pct": round(100.0 * (ppl / ppl_base - 1.0), 2),
                                     **extra, "per_record": rows}
        log.info("%s: %s", name, report["scenarios"][name]["scores"])

    try:
        if "rome" in scenarios:
            rows, secs, cpus = [], [], []
            for rec in tqdm(recs, desc="ROME, one edit at a time", disable=not progress):
                res = rome.apply(model, tok, rec, rome_hp, stats=stats[rome_hp.layer])
                secs.append(res.stats["seconds"]["total"])
                cpus.append(res.stats["seconds"].get("cpu_total", float("nan")))
                apply_deltas(model, res.deltas)
                rows += scored(score_records(model, tok, [rec], generate=generate), [len(rows)])
                restore(model, pristine)
            # perplexity per single edit is not measured (it would cost a held-out pass per edit)
            # CPU seconds beside wall seconds: on a shared machine the wall clock mostly measures the neighbours
            report["scenarios"]["rome"] = {"scores": summarise(rows), "median_seconds_per_edit":
                                           round(statistics.median(secs), 3),
                                           "median_cpu_seconds_per_edit": round(statistics.median(cpus), 3),
                                           "per_record": rows}
        if "rome-sequential" in scenarios:
            secs = []
            for rec in tqdm(recs, desc="ROME, sequential", disable=not progress):
                res = rome.apply(model, tok, rec, rome_seq_hp, stats=stats[rome_seq_hp.layer])
                secs.append(res.stats["seconds"]["total"])
                apply_deltas(model, res.deltas)
            finish("rome-sequential", score_records(model, tok, recs, generate=generate),
                   {"median_seconds_per_edit": round(statistics.median(secs), 3), "hparams": res.stats["hparams"]})
        # MEMIT and EMMET differ only in the closed form: with equal value hyperparameters their target values
        # (most of a batch's time) are computed once; each scenario's batch_seconds still includes them
        shared = None
        for name, mod, hp in (("memit", memit, memit_hp), ("emmet", emmet, emmet_hp)):
            if name not in scenarios:
                continue
            log.info("%s: one batch of %d edits", name, len(recs))
            targets = shared if shared is not None and memit.same_values(shared[1], hp) else None
            if targets is None and {"memit", "emmet"} <= set(scenarios):
                shared = (memit.compute_targets(model, tok, list(recs), hp, progress=progress), hp)
                targets = shared
            res = mod.apply(model, tok, list(recs), hp, stats=stats, targets=targets[0] if targets else None,
                            progress=progress)
            seconds = res.stats["seconds"]["total"] + (targets[0].seconds if targets else 0.0)
            apply_deltas(model, res.deltas)
            finish(name, score_records(model, tok, recs, generate=generate),
                   {"batch_seconds": round(seconds, 2), "values_shared": bool(targets and name == "emmet"),
                    "layers": res.stats.get("layers")})
    finally:
        restore(model, pristine)
    return report


def render(report: dict[str, Any]) -> str:
    """The report as a plain-text table (ES/PS/NS and generation scores, perplexity change, time)."""
    head = f"{'scenario':16s} {'ES':>6s} {'PS':>6s} {'NS':>6s} {'genES':>6s} {'genPS':>6s} {'ppl %':>7s} {'time':>10s}"
    chat = "chat_efficacy" in report["unedited"]["scores"]
    if chat:
        head += f" {'chatES':>7s} {'chatPS':>7s} {'name':>6s} {'unrel':>6s}"
    lines = [head]
    rows = [("unedited", report["unedited"])] + list(report["scenarios"].items())
    for name, r in rows:
        s = r["scores"]
        t = r.get("median_seconds_per_edit")
        when = f"{t:.2f} s/ed" if t is not None else (f"{r['batch_seconds']:.0f} s" if "batch_seconds" in r else "")
        ppl = r.get("perplexity_change_pct")
        lines.append(f"{name:16s} {s.get('efficacy', 0):6.1f} {s.get('paraphrase', 0):6.1f} "
                     f"{s.get('neighborhood', 0):6.1f} {s.get('gen_efficacy', float('nan')):6.1f} "
                     f"{s.get('gen_paraphrase', float('nan')):6.1f} {'' if ppl is None else f'{ppl:+.1f}':>7s} {when:>10s}"
                     + (f" {s.get('chat_efficacy', float('nan')):7.1f} {s.get('chat_paraphrase', float('nan')):7.1f} "
                        f"{s.get('subject_kept', float('nan')):6.1f} "
                        f"{_num(s.get('chat_unrelated')):>6s}" if chat else ""))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plot(report: dict[str, Any], out: str | Path) -> None:
    """A grouped bar chart of ES/PS/NS/genES per scenario (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["unedited", *report["scenarios"]]
    keys = ["efficacy", "paraphrase", "neighborhood", "gen_efficacy"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        vals = [(report["unedited"] if n == "unedited" else report["scenarios"][n])["scores"].get(key, 0)
                for n in names]
        ax.bar([i + j * width for i in range(len(names))], vals, width, label=key)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names)
    ax.set_ylabel("% of records")
    ax.set_ylim(0, 100)
    ax.set_title(f"weight edits on {report['n']} CounterFact records ({report.get('model', '')})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
