"""Safety gates a weight commit must pass before it lands.

>>> from memedit.gates import GateConfig, run_gates
>>> results = run_gates(model, tok, edits, deltas, GateConfig())     # doctest: +SKIP
>>> [(g.name, g.passed) for g in results]                            # doctest: +SKIP
[('finite', True), ('norm', True), ('efficacy', True), ('perplexity', True), ('neighborhood', True)]

Every gate runs with the deltas applied *temporarily*; the model leaves
``run_gates`` bit-identical. The gates, cheapest first:

* **finite**: no NaN or infinity in the deltas;
* **norm**: each delta's Frobenius norm relative to its weight stays within a budget;
* **efficacy**: each edited prompt now prefers ``target_new`` over the old
  answer (``target_true``, or the model's own greedy answer before the edit),
  by mean per-token log-probability;
* **perplexity**: perplexity on held-out text does not rise past a ratio;
* **neighborhood**: unrelated probe prompts keep their greedy next token;
* then, when ``chat`` is on and every gate above passed, the **chat gates**
  (:mod:`memedit.chat_gates`): the committed model is asked each edit's
  questions as a user asks them (chat template, greedy) and must answer with
  the new target (``chat_efficacy``, ``chat_paraphrase``, ``chat_reverse``),
  keep writing the subject's name (``subject_name``) and keep the answers of
  unrelated questions and of the subject's neighbours (``chat_unrelated``).

Half of that work measures the model *before* the commit (held-out
perplexity, the probes' answers, greedy old answers), which does not depend
on the commit. A :class:`GateCache` keeps those measurements keyed by an
exact fingerprint of the weights (every parameter's and buffer's bytes) and
of the token ids measured, so they are computed once per weights state. The
measurements *with* an accepted commit's deltas applied are stored under the
fingerprint of the edited weights too: once the commit lands (the same
``apply_deltas``, so bit-identical weights) the next commit's "before" is
already known. The verdicts are those of the uncached path, exactly: cached
numbers come from the same forward passes on the same weights and tokens.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Sequence

import torch

from .edits import Edit
from .methods.deltas import LowRankDelta, temporarily_applied
from .methods.hooks import get_parameter

log = logging.getLogger(__name__)


@dataclass
class GateConfig:
    """Thresholds; the defaults are deliberately strict for a chat product."""

    min_efficacy: float = 1.0            # fraction of edits that must prefer target_new
    max_perplexity_ratio: float = 1.05   # perplexity after / before on held-out text
    min_neighborhood_kept: float = 0.95  # fraction of probes whose greedy next token is unchanged
    max_relative_norm: float = 0.5       # ||delta||_F / ||W||_F per parameter
    heldout_texts: Sequence[str] | None = None   # default: memedit/resources/gate-heldout.json
    probes: Sequence[str] | None = None          # default: memedit/resources/gate-probes.json
    # chat gates (memedit.chat_gates): what users get from the committed model
    chat: bool = True                    # ask the chat questions (off: cloze gates only, e.g. tiny test models)
    chat_max_new_tokens: int = 48        # answer length of the edit's questions, the router's default
    chat_probe_max_new_tokens: int = 24  # answer length of the unrelated questions (their answers come first)
    min_chat_efficacy: float = 1.0       # fraction of edits whose direct question gets the new target
    min_chat_paraphrase: float = 0.5     # fraction of paraphrase questions that get it
    min_chat_reverse: float = 0.0        # fraction of reverse questions that name the subject (measured; see docs)
    min_subject_kept: float = 1.0        # fraction of prompts about the subject that still write its name
    min_chat_unrelated_kept: float = 0.95  # fraction of unrelated questions (right before) still right
    chat_probes: Sequence[dict[str, Any]] | None = None  # default: memedit/resources/chat-probes.json

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heldout_texts"] = "default" if self.heldout_texts is None else len(self.heldout_texts)
        d["probes"] = "default" if self.probes is None else len(self.probes)
        d["chat_probes"] = "default" if self.chat_probes is None else len(self.chat_probes)
        return d


@dataclass
class GateResult:
    name: str
    passed: bool
    value: float
    threshold: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resource(name: str) -> list[str]:
    return json.loads(resources.files("memedit").joinpath("resources", name).read_text(encoding="utf-8"))


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def mean_logprob(model: Any, tok: Any, prompt: str, target: str) -> float:
    """Mean per-token log-probability of ``target`` (with a leading space) after ``prompt``."""
    p_ids = tok(prompt, add_special_tokens=True)["input_ids"]
    t_ids = tok(" " + target.strip(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + t_ids], device=_device(model))
    logits = model(ids).logits[0, len(p_ids) - 1:-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(logp[torch.arange(len(t_ids)), torch.tensor(t_ids, device=logp.device)].mean())


@torch.no_grad()
def greedy_tokens(model: Any, tok: Any, prompts: Sequence[str], n: int = 1) -> list[list[int]]:
    """The greedy next ``n`` token ids of each prompt (one padded batch per step)."""
    out = []
    for prompt in prompts:
        ids = torch.tensor([tok(prompt)["input_ids"]], device=_device(model))
        got = []
        for _ in range(n):
            nxt = int(model(ids).logits[0, -1].argmax())
            got.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], dim=1)
        out.append(got)
    return out


@torch.no_grad()
def perplexity(model: Any, tok: Any, texts: Sequence[str]) -> float:
    """Token-weighted perplexity of ``texts``."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"]], device=_device(model))
        if ids.shape[1] < 2:
            continue
        logits = model(ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
        total += float(nll)
        count += ids.shape[1] - 1
    return math.exp(total / max(count, 1))


def old_answers(model: Any, tok: Any, edits: Sequence[Edit],
                memo: dict[tuple[str, int], list[int]] | None = None) -> list[str]:
    """What each edit replaces: ``target_true``, or the model's own greedy answer (before the edit).

    ``memo`` maps ``(prompt, n)`` to greedy token ids already computed on these weights.
    """
    out = []
    for e in edits:
        if e.target_true:
            out.append(e.target_true)
            continue
        n = max(1, len(tok(" " + (e.target_new or ""), add_special_tokens=False)["input_ids"]))
        key = (e.filled_prompt(), n)
        if memo is not None and key in memo:
            ids = memo[key]
        else:
            ids = greedy_tokens(model, tok, [e.filled_prompt()], n=n)[0]
            if memo is not None:
                memo[key] = ids
        out.append(tok.decode(ids).strip() or tok.decode(ids))
    return out


# --------------------------------------------------------------------------- caching what a commit does not change


def _tensor_digest(t: torch.Tensor) -> bytes:
    """sha1 of a tensor's dtype, shape and bytes (exact: any changed bit changes it)."""
    h = hashlib.sha1(f"{t.dtype}|{tuple(t.shape)}|{t.device.type}".encode())
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    t = t.contiguous()
    h.update(t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.digest()


def weights_digests(model: Any) -> dict[str, bytes]:
    """An exact digest per parameter and buffer (named), the model's class and config under ``""``."""
    config = getattr(model, "config", None)
    cfg = json.dumps(config.to_dict(), sort_keys=True, default=str) if hasattr(config, "to_dict") else repr(config)
    out = {"": hashlib.sha1(f"{type(model).__name__}|{cfg}".encode()).digest()}
    for name, p in model.named_parameters():
        out[name] = _tensor_digest(p)
    for name, b in model.named_buffers():
        out["buffer:" + name] = _tensor_digest(b)
    return out


def _combine(digests: dict[str, bytes]) -> str:
    h = hashlib.sha1()
    for name in sorted(digests):
        h.update(name.encode() + b"\0" + digests[name])
    return h.hexdigest()


def _ids_digest(tok: Any, texts: Sequence[str]) -> str:
    """Digest of the token ids the gates feed the model (the tokenizer is part of what is measured)."""
    h = hashlib.sha1()
    for text in texts:
        h.update(json.dumps(tok(text)["input_ids"]).encode() + b"\n")
    return h.hexdigest()


@dataclass
class Measured:
    """What the gates measure on one weights state: held-out perplexity, probe answers, greedy old answers."""

    perplexity: float
    probe_answers: list[list[int]]
    old_greedy: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    #: greedy chat answers on these weights: ``{"<max_new_tokens>:<chat template digest>": {prompt: answer}}``
    chat: dict[str, dict[str, str]] = field(default_factory=dict)


class GateCache:
    """Measurements per weights state, reused across commits (LRU of ``max_states`` states).

    The key is exact: digests of every parameter and buffer, the model's
    class and config, and the token ids of the held-out texts and probes.
    Computing it reads every weight once (about 0.8 s for 135M parameters on
    one core), far less than the forward passes it saves.
    """

    def __init__(self, max_states: int = 4) -> None:
        self.max_states = max_states
        self._states: OrderedDict[str, Measured] = OrderedDict()
        self._lock = threading.Lock()  # the default cache is shared by every ledger of the process
        self.hits = 0
        self.misses = 0

    def key(self, weights: dict[str, bytes], inputs: str) -> str:
        """The cache key of a weights state (:func:`weights_digests`) measured on ``inputs`` (token-id digests)."""
        return _combine(weights) + ":" + inputs

    def get(self, key: str) -> Measured | None:
        """The measurements stored under ``key``, counting a hit or a miss."""
        with self._lock:
            got = self._states.get(key)
            if got is None:
                self.misses += 1
            else:
                self.hits += 1
                self._states.move_to_end(key)
            return got

    def put(self, key: str, measured: Measured) -> None:
        """Store ``measured`` under ``key``, forgetting the least recently used states beyond ``max_states``."""
        with self._lock:
            self._states[key] = measured
            self._states.move_to_end(key)
            while len(self._states) > self.max_states:
                self._states.popitem(last=False)

    def clear(self) -> None:
        """Forget every stored state."""
        with self._lock:
            self._states.clear()


_DEFAULT_CACHE = GateCache()


_USE_DEFAULT: Any = object()


def run_gates(model: Any, tok: Any, edits: Sequence[Edit], deltas: Sequence[LowRankDelta],
              config: GateConfig | None = None, *, cache: GateCache | None = _USE_DEFAULT) -> list[GateResult]:
    """Evaluate every gate; the model is unchanged afterwards. Stops measuring after a failed cheap gate.

    ``cache``: where measurements of unchanged weights are kept (default: one
    per process); ``None`` measures everything afresh. Same verdicts either way.
    """
    cfg = config or GateConfig()
    if cache is _USE_DEFAULT:
        cache = _DEFAULT_CACHE
    results: list[GateResult] = []
    finite = all(d.is_finite() for d in deltas)
    results.append(GateResult("finite", finite, float(finite), 1.0))
    if not finite:
        return results
    ratios = {d.param: d.norm() / max(float(get_parameter(model, d.param).detach().float().norm()), 1e-12)
              for d in deltas}
    worst = max(ratios.values(), default=0.0)
    results.append(GateResult("norm", worst <= cfg.max_relative_norm, worst, cfg.max_relative_norm,
                              {"relative_norms": ratios}))
    if worst > cfg.max_relative_norm:
        return results

    heldout = list(cfg.heldout_texts) if cfg.heldout_texts is not None else _resource("gate-heldout.json")
    probes = list(cfg.probes) if cfg.probes is not None else _resource("gate-probes.json")
    inputs = _ids_digest(tok, heldout) + _ids_digest(tok, probes) if cache is not None else ""
    weights = weights_digests(model) if cache is not None else {}
    before = cache.get(cache.key(weights, inputs)) if cache is not None else None
    log.debug("gates: measurements of the weights before the commit %s", "reused" if before else "computed")
    if before is None:
        before = Measured(perplexity(model, tok, heldout), greedy_tokens(model, tok, probes))
        if cache is not None:
            cache.put(cache.key(weights, inputs), before)
    after_measured: Measured | None = None
    olds = old_answers(model, tok, edits, memo=before.old_greedy)
    ppl_before, probe_before = before.perplexity, before.probe_answers
    with temporarily_applied(model, list(deltas)):
        prefer = []
        for e, old in zip(edits, olds):
            new_lp = mean_logprob(model, tok, e.filled_prompt(), e.target_new or "")
            old_lp = mean_logprob(model, tok, e.filled_prompt(), old)
            prefer.append({"edit": e.id, "new": new_lp, "old": old_lp, "old_answer": old, "ok": new_lp > old_lp})
        ppl_after = perplexity(model, tok, heldout)
        probe_after = greedy_tokens(model, tok, probes)
        if cache is not None:
            # the weights once this commit lands: only the touched parameters differ from ``weights``
            after_weights = dict(weights)
            for d in deltas:
                after_weights[d.param] = _tensor_digest(get_parameter(model, d.param))
            if set(after_weights) == set(weights):  # a delta named an alias (tied weight): no safe shortcut
                after_measured = Measured(ppl_after, probe_after)
                cache.put(cache.key(after_weights, inputs), after_measured)
    efficacy = sum(p["ok"] for p in prefer) / max(len(prefer), 1)
    results.append(GateResult("efficacy", efficacy >= cfg.min_efficacy, efficacy, cfg.min_efficacy, {"edits": prefer}))
    ratio = ppl_after / ppl_before
    results.append(GateResult("perplexity", ratio <= cfg.max_perplexity_ratio, ratio, cfg.max_perplexity_ratio,
                              {"before": ppl_before, "after": ppl_after}))
    changed = [p for p, a, b in zip(probes, probe_before, probe_after) if a != b]
    kept = 1 - len(changed) / max(len(probes), 1)
    results.append(GateResult("neighborhood", kept >= cfg.min_neighborhood_kept, kept, cfg.min_neighborhood_kept,
                              {"changed": changed}))
    if cfg.chat and all(g.passed for g in results):
        results += _chat_gates(model, tok, edits, deltas, cfg, before, after_measured)
    return results


def _excerpt(text: str, n: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 3] + "..."


def refusal_reason(results: Sequence[GateResult]) -> str:
    """One line per failed gate: its value against its threshold and the first example it failed on."""
    lines = []
    for g in results:
        if g.passed:
            continue
        line = f"{g.name} {g.value:.3g} (needs {'<=' if g.name in ('norm', 'perplexity') else '>='} {g.threshold:g})"
        failed = g.detail.get("failed") or g.detail.get("changed") or []
        first = failed[0] if failed else None
        if isinstance(first, dict) and "before" in first:
            line += f": {first.get('prompt') or first.get('question')!r} answered {_excerpt(first['before'])!r} " \
                    f"before, {_excerpt(first['after'])!r} after"
        elif isinstance(first, dict) and "answer" in first:
            line += f": {first['question']!r} -> {_excerpt(first['answer'])!r}"
        elif isinstance(first, str):
            line += f": {first!r}"
        lines.append(line)
    return "; ".join(lines)


def _chat_gates(model: Any, tok: Any, edits: Sequence[Edit], deltas: Sequence[LowRankDelta], cfg: GateConfig,
                before: Measured, after: Measured | None) -> list[GateResult]:
    """The chat gates (:mod:`memedit.chat_gates`), answers memoised per weights state like the other measurements."""
    from .chat_gates import answers, chat_gate_results, chat_questions
    from .models.backends import LocalLM

    plan = chat_questions(edits, cfg.chat_probes)
    # answers depend on the answer length and the chat template (the weights and tokens are the cache's key)
    template = hashlib.sha1(str(getattr(tok, "chat_template", None)).encode()).hexdigest()[:16]
    asks = [(LocalLM(model, tok, max_new_tokens=cfg.chat_max_new_tokens), plan.before_prompts(), plan.after_prompts()),
            (LocalLM(model, tok, max_new_tokens=cfg.chat_probe_max_new_tokens), plan.unrelated_prompts(),
             plan.unrelated_prompts())]
    asked_before: dict[str, str] = {}
    asked_after: dict[str, str] = {}
    for lm, now, later in asks:
        asked_before.update(answers(lm, now, before.chat.setdefault(f"{lm.max_new_tokens}:{template}", {})))
    with temporarily_applied(model, list(deltas)):
        for lm, now, later in asks:
            memo = after.chat.setdefault(f"{lm.max_new_tokens}:{template}", {}) if after else None
            asked_after.update(answers(lm, later, memo))
    return chat_gate_results(plan, asked_before, asked_after, cfg)
