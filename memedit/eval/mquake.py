"""MQuAKE evaluation: multi-hop questions over edited facts (MeLLo and baselines).

    memedit eval mquake --data ../shared/data/mquake/mquake-cf-dev.jsonl --limit 20 --mode both \\
        --methods mello,base,ike --json /tmp/mquake.json --plot /tmp/mquake.png

>>> from memedit.eval.mquake import load_mquake
>>> cases = load_mquake("../shared/data/mquake/mquake-cf-dev.jsonl")     # doctest: +SKIP
>>> len(cases), cases[0].edits[0].sentence()                               # doctest: +SKIP
(200, 'Ellie Kemper is a citizen of Croatia')

Metrics (Zhong et al., 2023):

* **multi-hop accuracy**: a case counts if any of its three paraphrased
  questions is answered with ``new_answer`` or one of its aliases (the answer
  contains it, case-insensitively);
* **edit-wise accuracy**: each requested rewrite's own single-hop question is
  answered with its new target;
* **hop-by-hop trace accuracy** (MeLLo): the share of a question's hops whose
  intermediate answer is the new chain's entity at that hop, the share of
  questions with every hop right, and the share whose relation chain equals the
  dataset's;
* everything over all cases and over the **known-facts** subset, where the
  unedited model answers every one of the case's unedited single hops
  correctly (its ``single_hops``, asked as the relation's cloze after the same
  few real examples MeLLo uses); a second subset, **known-new**, adds the new
  chain's hops that no edit covers (the facts MeLLo must take from the model);
  a third, **known-needed**, asks only for those (the unedited model answers
  every hop of the new chain that no edit covers; a case whose every new hop
  is edited needs nothing from the model and belongs to it).

Methods: ``mello`` (structured MeLLo over the store), ``base`` (the unedited
model, question alone), ``ike`` (IKE with all of the case's edits in context),
``rome`` / ``memit`` (the case's edits written into the weights, sequentially
or in one batch, then the bare model asked; single mode only; see
:mod:`memedit.eval.mquake_weights`). Modes: ``single`` (one namespace per case) and ``batch`` (every case's edits in
one namespace: other cases' edits are distractors, and an edit of the same
subject and relation in a later case supersedes an earlier one).
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..edits import Edit
from ..errors import MemeditError, ValidationError
from .scoring import names_match

log = logging.getLogger(__name__)

# "editor": the questions asked through Editor.ask on the case's store (scope gate, router: what users get);
# "mello": MeLLo called directly (the method-level score); rome, memit: memedit.eval.mquake_weights
# "chat": the case's edits typed into a ChatSession in natural phrasings, the questions asked through it
# (memedit.eval.mquake_chat)
METHODS = ("mello", "editor", "chat", "base", "ike", "rome", "memit")
MODES = ("single", "batch")
DEFAULT_METHODS = "mello,editor,base,ike"
SUBSETS = ("all", "known", "known_new", "known_needed")


@dataclass(frozen=True)
class SingleHop:
    question: str
    cloze: str
    answers: tuple[str, ...]          # answer and aliases
    subject: str
    relation: str


@dataclass(frozen=True)
class MQuAKECase:
    case_id: str
    edits: tuple[Edit, ...]
    edit_questions: tuple[tuple[str, tuple[str, ...]], ...]   # (rewrite question, accepted new answers)
    questions: tuple[str, ...]
    answers: tuple[str, ...]           # original answer + aliases
    new_answers: tuple[str, ...]       # new answer + aliases
    single_hops: tuple[SingleHop, ...]
    new_single_hops: tuple[SingleHop, ...]
    edited_hops: tuple[int, ...]       # indices of the new chain's hops that an edit covers
    edit_relations: tuple[str, ...] = ()  # the Wikidata relation of each edit (for typing it in chat)

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(h.relation for h in self.single_hops)


def _names(d: dict[str, Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([d["answer"], *d.get("answer_alias", [])]))


def load_mquake(path: str | Path) -> list[MQuAKECase]:
    """MQuAKE-CF records as cases (a malformed record raises ValidationError naming the line)."""
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"no data file at {p}")
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            rec = json.loads(line)
            edits, eqs = [], []
            for rw in rec["requested_rewrite"]:
                edits.append(Edit.fact(rw["subject"], rw["prompt"], rw["target_new"]["str"],
                                       target_true=rw["target_true"]["str"], source=where))
                eqs.append((rw["question"], (rw["target_new"]["str"],)))
            orig, new = rec["orig"]["triples_labeled"], rec["orig"]["new_triples_labeled"]
            rels = [t[1] for t in rec["orig"]["triples"]]
            sh = tuple(SingleHop(h["question"], h["cloze"], _names(h), orig[i][0], rels[i])
                       for i, h in enumerate(rec["single_hops"]))
            nsh = tuple(SingleHop(h["question"], h["cloze"], _names(h), new[i][0], rels[i])
                        for i, h in enumerate(rec["new_single_hops"]))
            edit_set = {tuple(t) for t in rec["orig"]["edit_triples"]}
            edited = tuple(i for i, t in enumerate(rec["orig"]["new_triples"]) if tuple(t) in edit_set)
            # an edit question accepts the new hop's aliases too
            eqs = [(q, tuple(dict.fromkeys([*a, *next((h.answers for h in nsh if h.question == q), ())])))
                   for q, a in eqs]
            out.append(MQuAKECase(str(rec["case_id"]), tuple(edits), tuple(eqs), tuple(rec["questions"]),
                                  _names({"answer": rec["answer"], "answer_alias": rec.get("answer_alias", [])}),
                                  _names({"answer": rec["new_answer"],
                                          "answer_alias": rec.get("new_answer_alias", [])}), sh, nsh, edited,
                                  tuple(str(rw.get("relation_id", "")) for rw in rec["requested_rewrite"])))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValidationError(f"{where}: not an MQuAKE record ({type(exc).__name__}: {exc})") from exc
    if not out:
        raise ValidationError(f"{p} holds no records")
    return out


def hit(answer: str, expected: Sequence[str]) -> bool:
    """The answer names ``expected[0]`` or an acceptable alias among the rest (strict: :mod:`memedit.eval.scoring`)."""
    return names_match(answer, expected)


@dataclass
class CaseResult:
    case_id: str
    n_hops: int
    n_edits: int
    known: bool | None = None          # all unedited single hops answered right by the unedited model
    known_new: bool | None = None      # ... and the new chain's unedited hops
    known_needed: bool | None = None   # the new chain's unedited hops alone (what MeLLo takes from the model)
    multi_hop: dict[str, bool] = field(default_factory=dict)     # method -> any question right
    answers: dict[str, list[str]] = field(default_factory=dict)  # method -> answers per question asked
    edit_wise: dict[str, list[bool]] = field(default_factory=dict)
    hop_accuracy: list[float] = field(default_factory=list)      # mello, per question
    hops_all_right: list[bool] = field(default_factory=list)
    chain_right: list[bool] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    traces: list[list[dict[str, Any]]] = field(default_factory=list)
    routes: dict[str, list[str]] = field(default_factory=dict)   # editor: the route each question took
    typed: list[dict[str, Any]] = field(default_factory=list)     # chat: each edit as typed and as stored

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _rate(xs: Sequence[bool]) -> float | None:
    return round(sum(bool(x) for x in xs) / len(xs), 4) if xs else None


def summarize(results: Sequence[CaseResult], methods: Sequence[str]) -> dict[str, Any]:
    """Per subset (all, known, known_new, known_needed): size, multi-hop and edit-wise accuracy per method,
    MeLLo trace accuracy."""
    subsets = {"all": list(results), "known": [r for r in results if r.known],
               "known_new": [r for r in results if r.known_new],
               "known_needed": [r for r in results if r.known_needed]}
    out: dict[str, Any] = {}
    for name, rs in subsets.items():
        s: dict[str, Any] = {"cases": len(rs)}
        for m in methods:
            mh = [r.multi_hop[m] for r in rs if m in r.multi_hop]
            ew = [x for r in rs for x in r.edit_wise.get(m, [])]
            s[m] = {"multi_hop": _rate(mh), "n": len(mh), "edit_wise": _rate(ew), "n_edits": len(ew)}
        if "mello" in methods:
            ha = [x for r in rs for x in r.hop_accuracy]
            s["mello"]["hop_accuracy"] = round(sum(ha) / len(ha), 4) if ha else None
            s["mello"]["all_hops_right"] = _rate([x for r in rs for x in r.hops_all_right])
            s["mello"]["relation_chain_right"] = _rate([x for r in rs for x in r.chain_right])
        out[name] = s
    return out


class MQuAKEEvaluator:
    """Runs the cases through MeLLo and the baselines with one local (or LangChain) backend."""

    def __init__(self, backend: Any, *, methods: Sequence[str] = METHODS, max_new_tokens: int = 16,
                 keep_traces: bool = False, mello_kwargs: dict[str, Any] | None = None,
                 weight_options: dict[str, Any] | None = None, editor_policy: str = "auto"):
        from ..models.backends import as_backend

        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValidationError(f"methods must be among {METHODS}, got {list(methods)}")
        self.backend = as_backend(backend)
        self.methods = tuple(methods)
        self.max_new_tokens = max_new_tokens
        self.keep_traces = keep_traces
        self.mello_kwargs = dict(mello_kwargs or {})
        self._known: dict[str, tuple[bool, bool, bool]] = {}
        self._ike = None
        self._weights: dict[str, Any] = {}  # method -> WeightBaseline, built on first use (loads statistics)
        self.weight_options = dict(weight_options or {})  # keywords for WeightBaseline
        self.editor_policy = editor_policy  # the Editor's routing policy for the "editor" method

    def _weight_baseline(self, method: str) -> Any:
        if method not in self._weights:
            from .mquake_weights import WeightBaseline

            self._weights[method] = WeightBaseline(self.backend, method, **self.weight_options)
        return self._weights[method]

    def _plain_answers(self, questions: Sequence[str]) -> list[str]:
        return self.backend.chat_batch([[{"role": "user", "content": q}] for q in questions], self.max_new_tokens)

    def _known_facts(self, case: MQuAKECase, resolver: Any) -> tuple[bool, bool, bool]:
        """(known, known_new, known_needed) for ``case`` (see the module docstring)."""
        if case.case_id in self._known:
            return self._known[case.case_id]
        from ..methods.relations import Catalogue

        cat = Catalogue.load()
        hops = list(case.single_hops) + [h for i, h in enumerate(case.new_single_hops) if i not in case.edited_hops]
        in_cat = [h for h in hops if h.relation in cat]
        answers = dict(zip([id(h) for h in in_cat],
                           resolver.model_answers([(cat[h.relation], h.subject, h.cloze) for h in in_cat])))
        for h in hops:
            if id(h) not in answers:  # a relation the catalogue lacks: the dataset's cloze alone
                answers[id(h)] = self.backend.complete(h.cloze, 12) if self.backend.is_local else self.backend.chat(
                    [{"role": "user", "content": h.question}], 12)
        ok = [hit(answers[id(h)], h.answers) for h in hops]
        n = len(case.single_hops)
        known = all(ok[:n])
        known_needed = all(ok[n:])
        self._known[case.case_id] = (known, known and known_needed, known_needed)
        return self._known[case.case_id]

    def _ike_messages(self, question: str, case: MQuAKECase) -> list[dict[str, str]]:
        if self._ike is None:
            from ..methods.ike import IKE

            self._ike = IKE()
        return self._ike.build(question, [e.sentence() for e in case.edits])

    def _ike_answer(self, question: str, case: MQuAKECase) -> str:
        return self.backend.chat(self._ike_messages(question, case), self.max_new_tokens)

    def run_case(self, case: MQuAKECase, mello: Any, namespace: str) -> CaseResult:
        r = CaseResult(case.case_id, len(case.single_hops), len(case.edits))
        resolver = mello.resolver(self.backend)
        r.known, r.known_new, r.known_needed = self._known_facts(case, resolver)
        for m in self.methods:
            t0 = time.perf_counter()
            answers: list[str] = []
            ok = False
            if m in ("rome", "memit"):  # the case's edits in the weights, the bare model asked
                with self._weight_baseline(m).applied(case.edits):
                    answers = self._plain_answers(case.questions)
                    ew_answers = self._plain_answers([q for q, _ in case.edit_questions])
                r.multi_hop[m] = any(hit(a, case.new_answers) for a in answers)
                r.answers[m] = answers
                r.edit_wise[m] = [hit(a, acc) for a, (_, acc) in zip(ew_answers, case.edit_questions)]
                r.seconds[m] = round(time.perf_counter() - t0, 2)
                continue
            if m == "chat":  # the edits typed in a chat session, the questions asked through it
                from .mquake_chat import run_chat

                run_chat(self._chat_editor, case, f"{namespace}-chat", r)
                r.seconds[m] = round(time.perf_counter() - t0, 2)
                continue
            if m == "editor":  # what a user of Editor.ask gets: scope classifier, router, then the chosen method
                asked = [self._editor.ask(q, namespace) for q in case.questions]
                answers = [a.text for a in asked]
                r.routes[m] = [a.route for a in asked]
                r.multi_hop[m] = any(hit(a, case.new_answers) for a in answers)
                r.answers[m] = answers
                r.edit_wise[m] = [hit(self._editor.ask(q, namespace).text, acc) for q, acc in case.edit_questions]
                r.seconds[m] = round(time.perf_counter() - t0, 2)
                continue
            if m != "mello":  # the three questions in one batch (faster than three calls on a local model)
                convs = [[{"role": "user", "content": q}] if m == "base" else self._ike_messages(q, case)
                         for q in case.questions]
                answers = self.backend.chat_batch(convs, self.max_new_tokens)
                ok = any(hit(a, case.new_answers) for a in answers)
            for q in (case.questions if m == "mello" else ()):
                try:
                    a = mello.answer(q, namespace, record_use=False)
                    text, trace = a.text, a.trace
                except MemeditError as exc:
                    text, trace = f"error: {exc}", [{"step": "stop", "reason": str(exc)}]
                self._score_trace(r, case, trace)
                if self.keep_traces:
                    r.traces.append(trace)
                answers.append(text)
                ok = ok or hit(text, case.new_answers)
            r.multi_hop[m] = ok
            r.answers[m] = answers
            ew = []
            for q, accepted in case.edit_questions:
                if m == "mello":
                    try:
                        text = mello.answer(q, namespace, record_use=False).text
                    except MemeditError as exc:
                        text = f"error: {exc}"
                elif m == "base":
                    continue  # the unedited model cannot know a counterfactual edit
                else:
                    text = self._ike_answer(q, case)
                ew.append(hit(text, accepted))
            if ew:
                r.edit_wise[m] = ew
            r.seconds[m] = round(time.perf_counter() - t0, 2)
        return r

    @staticmethod
    def _score_trace(r: CaseResult, case: MQuAKECase, trace: list[dict[str, Any]]) -> None:
        hops = [s for s in trace if s.get("step") == "hop"]
        expected = case.new_single_hops
        right = [i < len(hops) and hit(hops[i].get("answer") or "", h.answers) for i, h in enumerate(expected)]
        r.hop_accuracy.append(sum(right) / len(expected))
        r.hops_all_right.append(all(right) and len(hops) == len(expected))
        dec = next((s for s in trace if s.get("step") == "decompose"), {})
        r.chain_right.append([x["relation"] for x in dec.get("relations", [])] == list(case.relations))

    def evaluate(self, cases: Sequence[MQuAKECase], *, mode: str = "single", progress: bool = False,
                 time_budget_s: float | None = None, store_path: str | Path | None = None,
                 on_result: Callable[[CaseResult], None] | None = None, subset: str = "all") -> dict[str, Any]:
        """Run ``cases`` in ``mode``; returns the report (config, summary, per-case results).

        ``subset``: evaluate only the cases of that subset (the unedited model's
        single-hop answers are checked first; the others are skipped and counted).
        """
        from ..methods.mello import MeLLo
        from ..store import EditStore

        if mode not in MODES:
            raise ValidationError(f"mode must be one of {MODES}, got {mode!r}")
        if not cases:
            raise ValidationError("no cases to evaluate")
        if subset not in SUBSETS:
            raise ValidationError(f"subset must be one of {SUBSETS}, got {subset!r}")
        tmp = None
        outside = 0
        if store_path is None:
            tmp = tempfile.TemporaryDirectory(prefix="memedit-mquake-")
            store_path = Path(tmp.name) / "mquake.db"
        store = EditStore(store_path)
        methods = self.methods if mode == "single" else tuple(m for m in self.methods if m in ("mello", "editor"))
        results: list[CaseResult] = []
        t_start = time.perf_counter()
        superseded = 0
        bar = None
        try:
            mello = MeLLo(store, self.backend, **self.mello_kwargs)
            ev = MQuAKEEvaluator.__new__(MQuAKEEvaluator)
            ev.__dict__.update(self.__dict__)
            ev.methods = methods
            if "editor" in methods:
                from ..editor import Editor

                ev._editor = Editor(model=self.backend, store=store, policy=self.editor_policy)
            if "chat" in methods:
                from ..editor import Editor

                ev._chat_editor = Editor(model=self.backend, store=store, policy=self.editor_policy)
            if mode == "batch":
                ns = "mquake-batch"
                store.create_namespace(ns)
                for c in cases:
                    store.add_many([replace(e, namespace=ns) for e in c.edits])
                superseded = store.count(ns, status="superseded")
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(cases), desc=f"mquake ({mode})", unit="case")
            for i, case in enumerate(cases):
                if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
                    break
                if subset != "all":
                    known, known_new, known_needed = ev._known_facts(case, mello.resolver(self.backend))
                    if not {"known": known, "known_new": known_new, "known_needed": known_needed}[subset]:
                        outside += 1
                        if bar is not None:
                            bar.update(1)
                        continue
                if mode == "single":
                    ns = f"mquake-{i}"
                    store.create_namespace(ns)
                    store.add_many([replace(e, namespace=ns) for e in case.edits])
                results.append(ev.run_case(case, mello, ns))
                if on_result is not None:
                    on_result(results[-1])
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            store.close()
            if tmp is not None:
                tmp.cleanup()
        secs = time.perf_counter() - t_start
        chat = {}
        if "chat" in methods:
            from .mquake_chat import typed_summary

            chat = {"typed": typed_summary(results)}
        return {**chat, "mode": mode, "methods": list(methods), "cases": len(results), "cases_requested": len(cases),
                "stopped_early": len(results) + outside < len(cases), "superseded_in_batch": superseded,
                "subset": subset, "outside_subset": outside,
                "seconds": round(secs, 1), "summary": summarize(results, methods),
                "results": [r.to_dict() for r in results]}


# --------------------------------------------------------------------------- command line


def render_table(report: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("subset", "cases", "method", "multi-hop", "edit-wise", "hop acc", "all hops", "chain"):
        t.add_column(col, justify="left" if col in ("subset", "method") else "right")
    fmt = lambda x: "-" if x is None else f"{x:.1%}"  # noqa: E731
    for subset, s in report["summary"].items():
        for m in report["methods"]:
            ms = s.get(m, {})
            t.add_row(subset, str(s["cases"]), m, fmt(ms.get("multi_hop")), fmt(ms.get("edit_wise")),
                      fmt(ms.get("hop_accuracy")), fmt(ms.get("all_hops_right")), fmt(ms.get("relation_chain_right")))
    return t


def plot(reports: dict[str, dict[str, Any]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bars: list[tuple[str, float, float]] = []
    for mode, rep in reports.items():
        for m in rep["methods"]:
            a = rep["summary"]["all"][m]["multi_hop"]
            k = rep["summary"]["known"][m]["multi_hop"]
            bars.append((f"{m}\n{mode}", np.nan if a is None else a, np.nan if k is None else k))
    x = np.arange(len(bars))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(bars)), 4))
    ax.bar(x - 0.2, [b[1] for b in bars], 0.4, label="all cases")
    ax.bar(x + 0.2, [b[2] for b in bars], 0.4, label="known-facts subset")
    ax.set_xticks(x, [b[0] for b in bars], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("multi-hop accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def build_command() -> Callable[..., None]:
    """The ``memedit eval mquake`` command (built on use so importing this module needs no typer)."""
    import typer

    def mquake(
        data: Path = typer.Option(..., "--data", help="MQuAKE-CF JSONL file."),
        limit: Optional[int] = typer.Option(20, "--limit", help="Random subsample size (all: 0)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the subsample."),
        model: str = typer.Option("smollm2-135m-instruct", "--model", help="Base model (registered name or path)."),
        methods: str = typer.Option(DEFAULT_METHODS, "--methods",
                                    help="Comma-separated: mello (called directly), editor (through Editor.ask: what "
                                    "users get), base, ike, rome, memit (weight baselines, single mode)."),
        side: str = typer.Option("report", "--side", help="report | tune | all: which side of the project's "
                                 "tune / report split to evaluate (memedit.eval.splits; report by default)."),
        mode: str = typer.Option("single", "--mode", help="single | batch | both"),
        subset: str = typer.Option("all", "--subset", help="all | known | known_new | known_needed: only the "
                                   "cases the unedited model's single-hop answers put in that subset."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: 1 if the load is high)."),
        time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Minutes per mode; stop before the next case after this."),
        partial: Optional[Path] = typer.Option(None, "--partial", help="Append each case result to this JSONL file as it comes."),
        traces: bool = typer.Option(False, "--traces", help="Keep MeLLo's traces in the JSON report."),
        through: Optional[str] = typer.Option(None, "--through", help="chat: also type each case's edits into a "
                                              "chat session in natural phrasings and ask its questions there "
                                              "(method 'chat'), beside MeLLo called directly ('mello')."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here."),
        plot_out: Optional[Path] = typer.Option(None, "--plot", help="Write a bar plot PNG here."),
    ) -> None:
        """MQuAKE: multi-hop, edit-wise and hop-trace accuracy of MeLLo and the baselines."""
        import os
        import random

        from rich.console import Console

        from ..models.backends import LocalLM

        console = Console(width=max(Console().width, 120))
        try:
            import torch

            if threads is None and os.getloadavg()[0] > 2:
                torch.set_num_threads(1)
            elif threads:
                torch.set_num_threads(threads)
            from .splits import check_side, default_split, read_jsonl_records

            check_side(side)
            cases = load_mquake(data)
            total = len(cases)
            sides = default_split().mquake_sides(read_jsonl_records(data))
            cases = default_split().select(cases, sides, side)
            if limit and limit < len(cases):
                idx = sorted(random.Random(seed).sample(range(len(cases)), limit))
                cases = [cases[i] for i in idx]
            ms = [m.strip() for m in methods.split(",") if m.strip()]
            if through not in (None, "chat"):
                raise ValidationError(f"--through takes 'chat', got {through!r}")
            if through == "chat":  # the chat figure beside the method-level one for the same cases
                extra = [] if methods == DEFAULT_METHODS else [m for m in ms if m not in ("mello", "chat")]
                ms = ["mello", "chat", *extra]
            modes = ["single", "batch"] if mode == "both" else [mode]
            ev = MQuAKEEvaluator(LocalLM.from_name(model), methods=ms, keep_traces=traces)
            on_side = sum(1 for x in sides if side == "all" or x == side)
            console.print(f"{total} MQuAKE cases in {data}; {on_side} on the {side} side of the split "
                          f"{default_split().sha256[:12]}; evaluating {len(cases)} (seed {seed}) with {model}")
            reports = {}
            for md in modes:
                sink = None
                if partial is not None:
                    partial.parent.mkdir(parents=True, exist_ok=True)
                    fh = partial.open("a", encoding="utf-8")
                    sink = lambda r, fh=fh, md=md: (fh.write(json.dumps(dict(r.to_dict(), mode=md)) + "\n"),  # noqa: E731
                                                    fh.flush())
                rep = ev.evaluate(cases, mode=md, progress=True, on_result=sink, subset=subset,
                                  time_budget_s=None if time_budget is None else time_budget * 60)
                rep["config"] = {"data": str(data), "limit": len(cases), "seed": seed, "model": model, "records": total,
                                 "side": side, "split": default_split().record()}
                reports[md] = rep
                console.print(render_table(rep, f"MQuAKE · {md} · {model} · n={rep['cases']}/{len(cases)} "
                                                f"({rep['seconds']:.0f} s)"))
                if rep.get("typed"):
                    console.print(f"chat: {json.dumps(rep['typed'])}")
        except MemeditError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(reports, indent=1, ensure_ascii=False), encoding="utf-8")
            console.print(f"JSON report: {json_out}")
        if plot_out is not None:
            plot(reports, plot_out, f"MQuAKE-CF n={len(cases)} model={model}")
            console.print(f"plot: {plot_out}")

    return mquake
