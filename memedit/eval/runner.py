"""Run evaluation cases through an :class:`~memedit.editor.Editor` and score every probe.

Two modes:

* ``"single"``: each case gets its own fresh namespace in one temporary store,
  holding only that case's edit (cases cannot interfere);
* ``"batch"``: every case's edit is stored at once in one namespace, so each
  edit is a distractor for every other case's questions (the realistic setting).

Each probe is routed with :meth:`Editor.prepare`; the probability test scores
``prepared.messages`` with ``prepared.backend`` (the model that would answer),
and the answer is generated with :meth:`Router.run` on that same prepared
prompt. Locality answers are compared with the bare base model's answer
(``base.chat([user: question])``, same ``max_new_tokens``).

``commit`` (issue 19) runs the commit-then-ask path: each case's edit is
written into the weights (``commit(editor, ids)``, e.g. gated ROME commits)
before its probes are asked, so committed edits answer from the weights route,
or from the memory where the router's check of the weights' answer fails. The
bare model's answers that locality is judged against are taken before the
first commit, from the unedited weights.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

from ..errors import ValidationError
from ..methods.ike import shown_answers
from .datasets import EvalCase, Probe
from .metrics import EvalReport, ProbeResult
from .scoring import answer_matches

if TYPE_CHECKING:  # pragma: no cover
    from ..commit import CommitReport
    from ..editor import Editor
    from ..store import EditStore

EditorFactory = Callable[["EditStore"], "Editor"]
#: ``(editor, edit ids) -> CommitReport``: how the commit-then-ask path writes a case's edits into the weights
Committer = Callable[["Editor", list[int]], "CommitReport"]
MODES = ("single", "batch")


def contains(answer: str, expected: Sequence[str]) -> bool:
    """The answer gives one of the expected strings, on word boundaries (strict: :mod:`memedit.eval.scoring`)."""
    return answer_matches(answer, expected)


def _score_probe(editor: "Editor", case: EvalCase, probe: Probe, namespace: str, own_id: int,
                 base_cache: dict[str, str], verdict_cache: dict[str, bool] | None = None) -> ProbeResult:
    router = editor.router
    prepared = editor.prepare(probe.question, namespace)
    own_p = next((u.scope_probability for u in prepared.used + prepared.candidates if u.edit.id == own_id), None)

    lp_pos = lp_neg = None
    prob_ok = None
    if probe.prob_pos and probe.prob_neg and probe.prob_pos.casefold() != probe.prob_neg.casefold():
        backend = prepared.backend
        if getattr(backend, "supports_logprobs", False):
            lp_pos, lp_neg = backend.continuation_logprobs([prepared.messages] * 2, [probe.prob_pos, probe.prob_neg])
            prob_ok = lp_pos > lp_neg

    answer = router.run(prepared)  # its route may differ from prepared's: a committed answer that misses falls back
    # the edits the answer used: those in scope, and any MeLLo's hops reached (a chain through an edited fact)
    used_ids = {int(u.edit.id) for u in answer.used if u.edit.id is not None}
    own_used = own_id in used_ids
    wrong = len(used_ids - {own_id})
    r = ProbeResult(case_id=case.case_id, source=case.source, kind=probe.kind, question=probe.question,
                    route=answer.route, in_scope=probe.in_scope, own_edit_used=own_used, wrong_edits_used=wrong,
                    own_scope_probability=None if own_p is None else round(own_p, 4), answer=answer.text,
                    gen_success=False, prob_success=prob_ok,
                    logprob_pos=None if lp_pos is None else round(lp_pos, 4),
                    logprob_neg=None if lp_neg is None else round(lp_neg, 4),
                    sub_kind=probe.sub_kind, expected=list(probe.expected), timings_ms=dict(answer.timings_ms))
    shown = shown_answers(answer.trace)
    if shown:
        r.demo_answers = shown
        # in scope the edit's answer is expected; out of scope, any shown answer that is not the truth is a leak
        wanted = list(probe.expected) + ([case.edit.target_new] if case.edit.target_new else [])
        r.demo_leak = any(answer_matches(answer.text, [a]) for a in shown) and not answer_matches(answer.text, wanted)
    if probe.in_scope:
        r.gen_success = contains(answer.text, probe.expected)
    else:
        if prob_ok is not None:
            r.prob_gt_wins = prob_ok
            bare = (verdict_cache or {}).get(probe.question)
            r.prob_success = prob_ok == (bare if bare is not None else _bare_verdict(editor, probe, prepared.route, prob_ok))
        if probe.question not in base_cache:
            base_cache[probe.question] = editor.base.chat([{"role": "user", "content": probe.question}],
                                                          router.max_new_tokens)
        r.base_answer = base_cache[probe.question]
        r.gen_success = answer.text == r.base_answer
        r.contains_gt = contains(answer.text, probe.expected)
    return r


def _bare_verdict(editor: "Editor", probe: Probe, route: str, routed_verdict: bool) -> bool:
    """Whether the bare base model, asked the bare question, prefers the positive answer."""
    if route == "base":
        return routed_verdict  # the very same prompt to the very same model
    lp_pos, lp_neg = editor.base.continuation_logprobs([[{"role": "user", "content": probe.question}]] * 2,
                                                       [probe.prob_pos, probe.prob_neg])
    return lp_pos > lp_neg


def evaluate(editor: Union["Editor", EditorFactory], cases: Sequence[EvalCase], *, mode: str = "single",
             store_path: str | Path | None = None, progress: bool = False,
             config: dict[str, Any] | None = None, time_budget_s: float | None = None,
             on_result: Callable[[ProbeResult], None] | None = None, commit: Committer | None = None) -> EvalReport:
    """Evaluate ``cases``; ``editor`` is an Editor or a factory ``(store) -> Editor``.

    With a factory the edits go to the store opened from ``store_path`` (a
    path or a ``postgresql://`` URL; new namespaces per run), by default a
    temporary SQLite store removed afterwards. With an Editor they go to
    its own store, in new namespaces named ``eval-…`` (left there).

    ``time_budget_s`` stops before the next case once that much time has
    passed; the report then covers the cases done (``report.cases``, and
    ``config["stopped_early"]``). ``on_result`` sees every probe result as it
    comes (e.g. to append it to a file). ``commit``: see the module docstring;
    ``config["commits"]`` then counts the edits committed and refused (by gate).
    """
    if mode not in MODES:
        raise ValidationError(f"mode must be one of {MODES}, got {mode!r}")
    if not cases:
        raise ValidationError("no cases to evaluate")
    from ..editor import Editor
    from ..store import open_store

    tmp = None
    store = None
    if isinstance(editor, Editor):
        ed = editor
    elif callable(editor):
        if store_path is None:
            tmp = tempfile.TemporaryDirectory(prefix="memedit-eval-")
            store_path = Path(tmp.name) / "eval.db"
        store = open_store(store_path)  # a path (SQLite) or a postgresql:// URL
        ed = editor(store)
        if not isinstance(ed, Editor):
            raise ValidationError("the editor factory must return a memedit Editor")
    else:
        raise ValidationError("evaluate() needs an Editor or a factory (store) -> Editor")

    tag = f"eval-{int(time.time() * 1000) % 10**9}"
    t_start = time.perf_counter()
    results: list[ProbeResult] = []
    base_cache: dict[str, str] = {}
    verdict_cache: dict[str, bool] = {}
    commits: dict[str, Any] = {"edits": 0, "committed": 0, "refused": 0, "refused_by_gate": {}, "seconds": 0.0}
    if commit is not None:  # judge locality against the unedited weights, before anything is written into them
        _bare_answers(ed, cases, base_cache, verdict_cache)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases), desc=f"evaluating ({mode})", unit="case")
    try:
        if mode == "batch":
            ns = f"{tag}-batch"
            ed.store.create_namespace(ns)
            from dataclasses import replace

            stored = ed.store.add_many([replace(c.edit, namespace=ns) for c in cases])
            ids = [int(e.id) for e in stored]  # type: ignore[arg-type]
            if commit is not None:
                _commit(ed, commit, ids, commits)
        done = 0
        for i, case in enumerate(cases):
            if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
                break
            if mode == "single":
                ns = f"{tag}-{i}"
                ed.store.create_namespace(ns)
                from dataclasses import replace

                own_id = int(ed.store.add(replace(case.edit, namespace=ns)).id)  # type: ignore[arg-type]
                if commit is not None:
                    _commit(ed, commit, [own_id], commits)
            else:
                own_id = ids[i]
            for probe in case.probes:
                results.append(_score_probe(ed, case, probe, ns, own_id, base_cache, verdict_cache))
                if on_result is not None:
                    on_result(results[-1])
            done += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            store.close()
        if tmp is not None:
            tmp.cleanup()
    cfg = dict(config or {})
    cfg["stopped_early"] = done < len(cases)
    cfg["cases_requested"] = len(cases)
    if commit is not None:
        cfg["commits"] = dict(commits, seconds=round(commits["seconds"], 1))
    return EvalReport(mode=mode, config=cfg, results=results, cases=done,
                      seconds=time.perf_counter() - t_start)


def _bare_answers(editor: "Editor", cases: Sequence[EvalCase], answers: dict[str, str],
                  verdicts: dict[str, bool]) -> None:
    """The unedited model's answer (and preference, where the probe has one) for every out-of-scope probe."""
    for case in cases:
        for probe in case.probes:
            if probe.in_scope or probe.question in answers:
                continue
            answers[probe.question] = editor.base.chat([{"role": "user", "content": probe.question}],
                                                       editor.router.max_new_tokens)
            if (probe.prob_pos and probe.prob_neg and probe.prob_pos.casefold() != probe.prob_neg.casefold()
                    and getattr(editor.base, "supports_logprobs", False)):
                verdicts[probe.question] = _bare_verdict(editor, probe, "weights", False)


def _commit(editor: "Editor", commit: Committer, ids: list[int], tally: dict[str, Any]) -> None:
    """Commit ``ids`` and count what landed and which gates refused the rest."""
    report = commit(editor, ids)
    tally["edits"] += len(ids)
    tally["committed"] += len(report.committed_edits)
    tally["seconds"] += report.seconds
    for refusal in report.refused:
        tally["refused"] += len(refusal.get("edits") or [None])
        for gate in refusal.get("failed") or ["error"]:
            tally["refused_by_gate"][gate] = tally["refused_by_gate"].get(gate, 0) + 1
