"""Training SERAC's counterfactual adapter: a LoRA (PEFT) on the packaged model, from the dev files.

>>> from memedit.methods.serac_training import TrainConfig
>>> TrainConfig(steps=10, rank=2).validate()

The adapter is used by :mod:`memedit.methods.serac_adapter` (format, split,
loading); this module makes one (``memedit serac train``):

* **data**: CounterFact- and zsRE/KnowEdit-format files, read with the
  loaders of :mod:`memedit.eval.datasets` (never copied). Each usable record
  on the training side of the split gives two examples: its prompt and its
  rephrase as questions, ``target_new`` as the answer, and the fact statement
  SERAC would see at run time (:func:`~memedit.methods.prompting.edit_statement`:
  prompt + target for a cloze, question + target for zsRE). The packaged IKE
  demonstration pool (hand-written, no benchmark data) adds copy, paraphrase
  and *reverse* examples (``"Who is X?" -> a sentence``); a share of the
  examples get one or two other facts beside their own (in batch use the
  router may hand over several in-scope edits).
* **loss**: on the answer tokens and the end-of-turn token only; the output
  layer runs on those positions alone.
* **held-out figures**: ``exact`` is teacher-forced: an example counts when
  the model's argmax is right at every answer token and at the end-of-turn
  token, which is exactly when greedy decoding returns the answer and stops.
"""
from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import ValidationError
from .serac_adapter import (ADAPTER_SYSTEM, DEFAULT_BASE, FORMAT, FORMAT_VERSION, LoRAAdapter, adapter_messages,
                            base_config, base_fingerprint, config_sha256, content_key, split_cases)

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay out of module import time
    import torch

    from ..eval.datasets import EvalCase
    from ..models.backends import LocalLM

#: every linear layer of a Llama-style block (SmolLM2, Qwen2, Gemma-3 use the same names)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DATA_KINDS = ("reliability", "generalization")   # the probes of a record used as training questions


# --------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class Example:
    """One training or held-out example: the fact(s) in the prompt, the question, the answer."""

    facts: tuple[str, ...]
    question: str
    answer: str
    source: str        # counterfact | zsre | pool
    kind: str          # reliability | generalization | copy | update | reverse

    def messages(self, system: str = ADAPTER_SYSTEM) -> list[dict[str, str]]:
        return adapter_messages(self.facts, self.question, system)


@dataclass
class DataFile:
    path: str
    format: str
    sha256: str
    records: int
    cases: int
    skipped: int
    train_cases: int = 0
    heldout_cases: int = 0
    train_examples: int = 0
    heldout_examples: int = 0


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def case_examples(case: "EvalCase") -> list[Example]:
    """The examples of one benchmark case: its reliability and generalization questions -> ``target_new``."""
    from .prompting import edit_statement

    fact = edit_statement(case.edit)
    return [Example((fact,), p.question, case.edit.target_new or "", case.source, p.kind)
            for p in case.probes if p.kind in DATA_KINDS]


def pool_examples() -> tuple[list[Example], str]:
    """Copy, update and reverse examples from the packaged IKE demonstration pool, and the pool file's sha256."""
    from .ike import POOL_PATH, DemonstrationPool

    pool = DemonstrationPool.load()
    out = []
    for entry in pool.entries:
        for kind in ("copy", "update", "reverse"):
            d = entry.demonstration(kind)
            if d is not None:
                out.append(Example((d.fact,), d.prompt, d.answer, "pool", kind))
    return out, file_sha256(POOL_PATH)


def load_examples(files: Sequence[tuple[str | Path, str]], data_split: Any = None, *, use_pool: bool = True
                  ) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """``(train, heldout, info)`` from ``[(path, format), ...]``: the tune side trains, the report side is held out.

    ``info`` records files, hashes, counts, the split (definition and sha256)
    and the content key of every case trained on (``info["trained_on"]``).
    """
    from ..eval.datasets import load_cases
    from ..eval.splits import default_split

    split = data_split if data_split is not None else default_split()
    trained_on: list[str] = []
    if not files:
        raise ValidationError("no training data: give a CounterFact and/or a zsRE-format file")
    train: list[Example] = []
    held: list[Example] = []
    data: list[dict[str, Any]] = []
    for path, fmt in files:
        loaded = load_cases(path, fmt)       # ValidationError for a missing file or a malformed record
        if not loaded.cases:
            raise ValidationError(f"{path} has no usable {fmt} records ({loaded.total} read, {loaded.skipped} skipped)")
        df = DataFile(path=Path(path).name, format=fmt, sha256=file_sha256(path), records=loaded.total,
                      cases=len(loaded.cases), skipped=loaded.skipped)
        tr, he = split_cases(loaded.cases, split)
        trained_on.extend(content_key(c) for c in tr)
        for side, cases, sink in (("train", tr, train), ("heldout", he, held)):
            exs = [e for c in cases for e in case_examples(c)]
            sink.extend(exs)
            setattr(df, f"{side}_cases", len(cases))
            setattr(df, f"{side}_examples", len(exs))
        data.append(asdict(df))
    info: dict[str, Any] = {"files": data, "split": split.record(), "trained_on": sorted(set(trained_on))}
    if use_pool:
        pool, sha = pool_examples()
        train.extend(pool)
        info["pool"] = {"path": "memedit/resources/ike-demonstrations.json", "sha256": sha, "examples": len(pool),
                        "note": "hand-written demonstrations (no benchmark data); training only"}
    return train, held, info


def with_distractors(examples: Sequence[Example], rate: float, rng: random.Random) -> list[Example]:
    """A share ``rate`` of the examples get one or two other examples' facts beside their own, in random order."""
    facts = sorted({e.facts[0] for e in examples})
    if rate <= 0 or len(facts) < 3:
        return list(examples)
    out = []
    for e in examples:
        if rng.random() < rate:
            others = [f for f in rng.sample(facts, 3) if f != e.facts[0]][:rng.choice((1, 2))]
            fs = [e.facts[0], *others]
            rng.shuffle(fs)
            e = Example(tuple(fs), e.question, e.answer, e.source, e.kind)
        out.append(e)
    return out


def _linear_targets(model: Any, targets: Sequence[str]) -> list[str]:
    import torch

    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise ValidationError(f"the model has no linear layers named {list(targets)} to adapt")
    return names


def _encode(lm: "LocalLM", ex: Example, system: str) -> tuple[list[int], list[int]]:
    """Prompt ids (rendered exactly as :meth:`LocalLM.chat` renders them) and answer ids + end-of-turn token."""
    prompt = lm.prompt_ids(ex.messages(system))
    answer = list(lm.tokenizer(ex.answer, add_special_tokens=False)["input_ids"])
    if not answer:
        raise ValidationError(f"answer {ex.answer!r} tokenizes to nothing")
    stop = lm.stop_token_ids[:1]
    return prompt, answer + stop


def _answer_logits(model: Any, input_ids: "torch.Tensor", mask: "torch.Tensor", sel: "torch.Tensor") -> "torch.Tensor":
    """Logits at the positions ``sel`` (a bool mask over ``input_ids[:, :-1]``) only; the output layer runs on
    those rows alone, which saves a fifth of a SmolLM2 step (its vocabulary is 49k)."""
    import torch

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is not None and head is not None and decoder is not model:
        hidden = decoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        logits = head(hidden[:, :-1][sel])
        cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits
    return model(input_ids=input_ids, attention_mask=mask).logits[:, :-1][sel]


def _batch(pairs: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple["torch.Tensor", ...]:
    """Right-padded ids, attention mask, the answer-target mask over ``[:, :-1]`` and the targets."""
    import torch

    width = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    sel = torch.zeros((len(pairs), width - 1), dtype=torch.bool)
    for r, (p, a) in enumerate(pairs):
        ids[r, :len(p) + len(a)] = torch.tensor(p + a, dtype=torch.long)
        mask[r, :len(p) + len(a)] = 1
        sel[r, len(p) - 1:len(p) + len(a) - 1] = True   # position t predicts token t + 1
    targets = ids[:, 1:][sel]
    return ids, mask, sel, targets


def heldout_figures(model: Any, encoded: Sequence[tuple[list[int], list[int]]], sources: Sequence[str], *,
                    pad: int, batch_size: int = 8) -> dict[str, Any]:
    """Teacher-forced loss (mean over answer tokens), token accuracy and exact answers, overall and per source."""
    import torch

    stats: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            ids, mask, sel, targets = _batch(chunk, pad)
            logits = _answer_logits(model, ids, mask, sel).float()
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            ok = logits.argmax(-1) == targets
            offset = 0
            for i, (_, a) in enumerate(chunk):
                n = len(a)
                for src in ("overall", sources[start + i]):
                    s = stats.setdefault(src, {"examples": 0, "tokens": 0, "nll": 0.0, "correct": 0, "exact": 0})
                    s["examples"] += 1
                    s["tokens"] += n
                    s["nll"] += float(nll[offset:offset + n].sum())
                    s["correct"] += int(ok[offset:offset + n].sum())
                    s["exact"] += int(bool(ok[offset:offset + n].all()))
                offset += n
    return {src: {"examples": int(s["examples"]), "loss": round(s["nll"] / max(s["tokens"], 1), 4),
                  "token_accuracy": round(s["correct"] / max(s["tokens"], 1), 4),
                  "exact": round(s["exact"] / max(s["examples"], 1), 4)} for src, s in stats.items()}


# --------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Hyper-parameters of ``memedit serac train`` (defaults fit ~20 minutes on one CPU thread for SmolLM2)."""

    steps: int = 160
    batch_size: int = 8
    rank: int = 4
    alpha: float = 8.0
    lr: float = 1e-3
    warmup: int = 10
    weight_decay: float = 0.0
    seed: int = 0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    distractor_rate: float = 0.2
    eval_examples: int = 200
    max_tokens: int = 256
    use_pool: bool = True
    save_dtype: str = "float16"
    system: str = ADAPTER_SYSTEM

    def validate(self) -> None:
        def pos_int(name: str, lo: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValidationError(f"{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")

        pos_int("steps")
        pos_int("batch_size")
        pos_int("rank")
        pos_int("warmup", 0)
        pos_int("eval_examples", 0)
        pos_int("max_tokens", 8)
        if self.rank > 256:
            raise ValidationError("rank must be at most 256")
        for name in ("lr", "alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValidationError(f"{name} must be a positive number, got {v!r}")
        if not 0.0 <= float(self.distractor_rate) <= 1.0:
            raise ValidationError("distractor-rate must be in [0, 1]")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValidationError("weight-decay must be >= 0")
        if self.save_dtype not in ("float16", "float32", "bfloat16"):
            raise ValidationError("save-dtype must be float16, bfloat16 or float32")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValidationError("targets must be a non-empty list of module names")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValidationError(f"seed must be an integer, got {self.seed!r}")


@dataclass
class TrainResult:
    tensors: dict[str, Any]
    history: list[float]
    heldout_before: dict[str, Any]
    heldout_after: dict[str, Any]
    seconds: float
    skipped_long: int
    train_examples: int
    details: dict[str, Any] = field(default_factory=dict)


def _lora_layers(model: Any) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def train_adapter(model: Any, tokenizer: Any, train: Sequence[Example], heldout: Sequence[Example],
                  config: TrainConfig, *, progress: bool = False,
                  on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train a LoRA adapter on ``train`` and return its tensors (in ``config.save_dtype``), loss history and
    held-out figures before and after. ``model`` is changed (LoRA layers are injected): pass a private copy."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    from ..models.backends import LocalLM

    config.validate()
    if not train:
        raise ValidationError("no training examples")
    t0 = time.perf_counter()
    lm = LocalLM(model, tokenizer)
    rng = random.Random(config.seed)
    examples = with_distractors(train, config.distractor_rate, rng)
    encoded, skipped = [], 0
    for ex in examples:
        p, a = _encode(lm, ex, config.system)
        if len(p) + len(a) > config.max_tokens:
            skipped += 1
            continue
        encoded.append((p, a))
    if not encoded:
        raise ValidationError(f"every training example is longer than max-tokens={config.max_tokens}")
    held = list(heldout)
    random.Random(config.seed + 1).shuffle(held)
    held = held[:config.eval_examples]
    held_enc = [_encode(lm, ex, config.system) for ex in held]
    held_src = [ex.source for ex in held]

    targets = _linear_targets(model, config.targets)
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(config.seed)
    lcfg = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, bias="none",
                      target_modules=sorted({t.rsplit(".", 1)[-1] for t in targets}))
    inject_adapter_in_model(lcfg, model)
    layers = _lora_layers(model)
    params = []
    for m in layers.values():
        for p in (m.lora_A["default"].weight, m.lora_B["default"].weight):
            p.requires_grad_(True)
            params.append(p)
    model.eval()  # no dropout anywhere; gradients still flow to the LoRA weights
    pad = lm.pad_token_id

    before = heldout_figures(model, held_enc, held_src, pad=pad) if held_enc else {}
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warm = max(config.warmup, 0)

    def lr_at(step: int) -> float:  # linear warm-up, then linear decay to 10% of lr
        if step < warm:
            return config.lr * (step + 1) / warm
        frac = (step - warm) / max(config.steps - warm, 1)
        return config.lr * (1.0 - 0.9 * frac)

    order: list[int] = []
    history: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc="training SERAC adapter", unit="step")
    try:
        for step in range(config.steps):
            if len(order) < config.batch_size:
                nxt = list(range(len(encoded)))
                rng.shuffle(nxt)
                order.extend(nxt)
            idx, order = order[:config.batch_size], order[config.batch_size:]
            ids, mask, sel, tg = _batch([encoded[i] for i in idx], pad)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = _answer_logits(model, ids, mask, sel).float()
            loss = torch.nn.functional.cross_entropy(logits, tg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            history.append(round(loss.item(), 5))
            if on_step is not None:
                on_step(step, history[-1])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sum(history[-10:]) / len(history[-10:]):.3f}")
    finally:
        if bar is not None:
            bar.close()

    # What is saved is what is measured: round the LoRA weights to the saving dtype first.
    dtype = getattr(torch, config.save_dtype)
    tensors: dict[str, Any] = {}
    with torch.no_grad():
        for name, m in sorted(layers.items()):
            for part in ("lora_A", "lora_B"):
                w = getattr(m, part)["default"].weight
                w.copy_(w.to(dtype).to(w.dtype))
                tensors[f"{name}.{part}"] = w.detach().to(dtype).contiguous().clone()
    after = heldout_figures(model, held_enc, held_src, pad=pad) if held_enc else {}
    return TrainResult(tensors=tensors, history=history, heldout_before=before, heldout_after=after,
                       seconds=time.perf_counter() - t0, skipped_long=skipped, train_examples=len(encoded))


def loss_curve(history: Sequence[float], points: int = 20) -> list[list[float]]:
    """``[[last step of window, mean loss of window], ...]`` over ``points`` equal windows."""
    if not history:
        return []
    n = len(history)
    size = max(1, math.ceil(n / points))
    return [[min(s + size, n), round(sum(history[s:s + size]) / len(history[s:s + size]), 4)]
            for s in range(0, n, size)]


def train_serac_adapter(out: str | Path, *, counterfact: str | Path | None = None, zsre: str | Path | None = None,
                        base: str = DEFAULT_BASE, config: TrainConfig | None = None, model: Any = None,
                        progress: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Train on the given files and write ``out/serac-adapter.{safetensors,json}``; returns the metadata.

    ``model`` (a ``(model, tokenizer)`` pair, e.g. a tiny test model) replaces
    loading ``base``; it is changed, so pass a copy you do not need.
    Everything is checked (options, files, records) before any model is
    loaded or anything is written.
    """
    import torch

    config = config or TrainConfig()
    config.validate()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValidationError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(threads)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"--out {out} exists and is not a directory")
    files = [(p, f) for p, f in ((counterfact, "counterfact"), (zsre, "zsre")) if p is not None]
    train, held, info = load_examples(files, use_pool=config.use_pool)
    if not any(e.source != "pool" for e in train):
        raise ValidationError("no benchmark case is on the tune side of the split: nothing to train on")
    trained_on = info.pop("trained_on")
    split_record = info.pop("split")

    if model is None:
        from ..models.registry import load_causal_lm

        mdl, tok = load_causal_lm(base, reuse=False)   # a private copy: LoRA layers go into it
    else:
        mdl, tok = model
    fingerprint = base_fingerprint(mdl)
    cfg = base_config(mdl)
    result = train_adapter(mdl, tok, train, held, config, progress=progress)
    meta = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "base_model": base, "base_config": cfg, "base_config_sha256": config_sha256(cfg),
        "base_weights_sha256": fingerprint,
        "lora": {"rank": config.rank, "alpha": config.alpha, "scale": config.alpha / config.rank,
                 "target_modules": list(config.targets), "dtype": config.save_dtype,
                 "layers": len(result.tensors) // 2,
                 "parameters": int(sum(t.numel() for t in result.tensors.values()))},
        "prompt": {"system": config.system, "user": 'New fact: "<statement>" (one line per in-scope edit)\\n'
                   "Question: <question>", "chat_template": bool(getattr(tok, "chat_template", None)),
                   "loss": "answer tokens + end-of-turn token"},
        "data": info, "split": split_record,
        "trained_on": {"key": "sha256(subject \\x1f filled prompt \\x1f target_new)[:16]", "cases": trained_on},
        "training": {"steps": config.steps, "batch_size": config.batch_size, "lr": config.lr,
                     "warmup": config.warmup, "schedule": "linear warm-up, then linear decay to 0.1 lr",
                     "optimizer": "AdamW", "weight_decay": config.weight_decay, "grad_clip": 1.0,
                     "seed": config.seed, "distractor_rate": config.distractor_rate,
                     "max_tokens": config.max_tokens, "train_examples": result.train_examples,
                     "skipped_long": result.skipped_long, "heldout_examples_total": len(held),
                     "threads": torch.get_num_threads(), "seconds": round(result.seconds, 1),
                     "final_loss": round(sum(result.history[-10:]) / len(result.history[-10:]), 4),
                     "loss_curve": loss_curve(result.history)},
        "heldout": {"examples": min(config.eval_examples, len(held)), "before": result.heldout_before,
                    "after": result.heldout_after,
                    "note": "teacher-forced on held-out examples; exact = greedy decoding returns the answer and stops"},
        "versions": _versions(),
    }
    LoRAAdapter(result.tensors, meta).save(out)
    return meta


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("memedit", "torch", "transformers", "peft"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:  # pragma: no cover
            pass
    return out
