"""SERAC's trained counterfactual adapter at run time: the prompt format, the split, loading and merging.

>>> from memedit.methods.serac_adapter import adapter_messages
>>> [m["role"] for m in adapter_messages(["The CEO of Acme is Jane Roe"], "Who runs Acme?")]
['system', 'user']

SERAC answers in-scope questions with a small separate *counterfactual
model* conditioned on the edit (:mod:`memedit.methods.serac`). Prompted, the
packaged SmolLM2-135M-Instruct needs IKE-style demonstrations and still often
answers with a sentence around the object; a LoRA adapter fine-tuned on
``(fact statement, question) -> answer`` examples
(:mod:`memedit.methods.serac_training`, ``memedit serac train``) answers with
the object alone. This module is what SERAC needs to *use* one:

* **format**: a short system line and one user turn, ``New fact: "..."`` lines
  and ``Question: ...`` (the same quoting as IKE, so stored text cannot steer
  the prompt), no demonstrations, rendered with the model's chat template.
* **split**: an adapter trains only on the *tune* side of the project's one
  split (:mod:`memedit.eval.splits`, by subject) and records the split's
  definition and sha256, plus the content key of every case it trained on
  (:func:`content_key`), so ``memedit eval run --heldout-of DIR`` drops exactly
  those cases and an adapter is never scored on its training cases.
* **files**: ``serac-adapter.safetensors`` (``<module>.lora_A`` ``[r, in]`` and
  ``<module>.lora_B`` ``[out, r]`` per adapted linear layer) and
  ``serac-adapter.json`` (base model name and fingerprints, rank, alpha,
  target modules, data files with their sha256, split rule, steps, seed, loss
  curve, held-out figures). No pickle.
* **loading** (:func:`load_counterfactual`): a private float32 copy of the base
  model is loaded, its fingerprint (sha256 over every weight) is compared with
  the adapter's, and only then ``W += (alpha / r) * B @ A`` is merged in; a
  mismatch raises :class:`~memedit.errors.ValidationError` and changes nothing.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ValidationError
from .prompting import facts_block, question_line

if TYPE_CHECKING:  # pragma: no cover - heavy imports stay out of module import time
    from ..eval.datasets import EvalCase
    from ..models.backends import LocalLM

log = logging.getLogger(__name__)

FORMAT = "memedit-serac-lora"
FORMAT_VERSION = 1
WEIGHTS_FILE = "serac-adapter.safetensors"
META_FILE = "serac-adapter.json"
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "resources" / "serac-adapter"
DEFAULT_BASE = "smollm2-135m-instruct"
ADAPTER_SYSTEM = "Answer the question with the new fact, in a few words."


def adapter_messages(statements: Sequence[str], question: str, system: str = ADAPTER_SYSTEM) -> list[dict[str, str]]:
    """The adapter's prompt: a short system line, then the quoted fact(s) and the question (no demonstrations)."""
    if not statements:
        raise ValidationError("the SERAC adapter needs at least one in-scope edit")
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{facts_block(statements)}\nQuestion: {question_line(question)}"}]


# --------------------------------------------------------------------------- the split


def case_key(subject: str, prompt: str) -> str:
    """What identifies a record for the split: its subject and its (subject-filled) prompt."""
    return f"{subject}\x1f{prompt}"


def content_key(case: "EvalCase") -> str:
    """A case's content, hashed: ``sha256(subject \x1f filled prompt \x1f target_new)[:16]``.

    Adapters record the content keys of every case they trained on, so an
    evaluation drops exactly those cases, whatever file they come from.
    """
    e = case.edit
    text = f"{e.subject or ''}\x1f{e.filled_prompt() if e.prompt else e.statement or ''}\x1f{e.target_new or ''}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def split_cases(cases: Sequence["EvalCase"], data_split: Any = None) -> tuple[list["EvalCase"], list["EvalCase"]]:
    """``(tune, report)``: the cases on each side of the project's split (:mod:`memedit.eval.splits`)."""
    from ..eval.splits import default_split

    split = data_split if data_split is not None else default_split()
    tune, report = [], []
    for c in cases:
        (report if split.side_of_subject(c.edit.subject or "") == "report" else tune).append(c)
    return tune, report


def exclude_training_cases(cases: Sequence["EvalCase"], adapter: "str | Path | LoRAAdapter") -> tuple[list["EvalCase"], int]:
    """The cases an adapter did not train on, and how many were dropped.

    A case is dropped when its content (:func:`content_key`) is among the
    adapter's recorded training cases, so cases from files the adapter never
    saw are all kept. An adapter without that record (made before it existed)
    cannot say what it trained on and is refused.
    """
    ad = adapter if isinstance(adapter, LoRAAdapter) else LoRAAdapter.load(adapter)
    trained = ad.trained_on
    if trained is None:
        raise ValidationError(f"{ad.path or 'the adapter'} does not record the cases it trained on (made by an older "
                              "memedit); retrain it with 'memedit serac train' to evaluate it on held-out cases")
    kept = [c for c in cases if content_key(c) not in trained]
    return kept, len(cases) - len(kept)


# --------------------------------------------------------------------------- model helpers


def base_fingerprint(model: Any) -> str:
    """sha256 over every weight of ``model`` (name, shape and float32 bytes, in name order)."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode("utf-8"))
            h.update(str(tuple(t.shape)).encode("ascii"))
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


CONFIG_FIELDS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings")


def base_config(model: Any) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    out = {"architecture": type(model).__name__}
    for k in CONFIG_FIELDS:
        v = getattr(cfg, k, None)
        if isinstance(v, (int, float, str, bool)):
            out[k] = v
    return out


def config_sha256(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the adapter on disk


class LoRAAdapter:
    """LoRA tensors and their metadata; :meth:`load` checks both, :meth:`merge_into` applies them.

    ``tensors``: ``{"<module>.lora_A": [r, in], "<module>.lora_B": [out, r]}``.
    """

    def __init__(self, tensors: dict[str, Any], meta: dict[str, Any], path: Path | None = None):
        self.tensors = tensors
        self.meta = meta
        self.path = path
        self._check()

    # ---- validation -------------------------------------------------------------
    def _check(self) -> None:
        import torch

        m = self.meta
        where = str(self.path) if self.path else "the adapter"
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise ValidationError(f"{where} is not a memedit SERAC adapter (format {FORMAT!r} expected)")
        if m.get("version") != FORMAT_VERSION:
            raise ValidationError(f"{where} has adapter format version {m.get('version')!r}; this memedit reads "
                                  f"{FORMAT_VERSION}")
        for key in ("base_model", "base_weights_sha256", "lora"):
            if key not in m:
                raise ValidationError(f"{where}: metadata lacks {key!r}")
        lora = m["lora"]
        try:
            self.rank, self.scale = int(lora["rank"]), float(lora["scale"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"{where}: bad lora metadata ({exc})") from exc
        self.split = m.get("split")
        trained = m.get("trained_on")
        if trained is not None and not (isinstance(trained, dict) and isinstance(trained.get("cases"), list)
                                        and all(isinstance(k, str) for k in trained["cases"])):
            raise ValidationError(f"{where}: 'trained_on' must be an object with a list of case keys")
        self.trained_on: frozenset[str] | None = None if trained is None else frozenset(trained["cases"])
        modules = {k.rsplit(".", 1)[0] for k in self.tensors}
        if not modules:
            raise ValidationError(f"{where} holds no LoRA tensors")
        for mod in modules:
            a, b = self.tensors.get(f"{mod}.lora_A"), self.tensors.get(f"{mod}.lora_B")
            if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.ndim != 2 or b.ndim != 2 \
                    or a.shape[0] != self.rank or b.shape[1] != self.rank:
                raise ValidationError(f"{where}: tensors of {mod} are not a rank-{self.rank} LoRA pair")
        if set(self.tensors) != {f"{mod}.{p}" for mod in modules for p in ("lora_A", "lora_B")}:
            raise ValidationError(f"{where}: unexpected tensor names")
        self.modules = sorted(modules)

    @property
    def base_model(self) -> str:
        return str(self.meta["base_model"])

    @property
    def system(self) -> str:
        return str((self.meta.get("prompt") or {}).get("system") or ADAPTER_SYSTEM)

    # ---- files ------------------------------------------------------------------
    @classmethod
    def load(cls, path: "str | Path | LoRAAdapter") -> "LoRAAdapter":
        """Read an adapter directory (or ``"packaged"``); raises ValidationError for anything missing or wrong."""
        if isinstance(path, LoRAAdapter):
            return path
        from safetensors.torch import load_file

        d = PACKAGED_DIR if str(path) == "packaged" else Path(path)
        if d.is_file() and d.name in (WEIGHTS_FILE, META_FILE):
            d = d.parent
        wf, mf = d / WEIGHTS_FILE, d / META_FILE
        if not wf.is_file() or not mf.is_file():
            raise ValidationError(f"no SERAC adapter at {d}: it needs {WEIGHTS_FILE} and {META_FILE} "
                                  "(train one with 'memedit serac train --out DIR')")
        try:
            meta = json.loads(mf.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValidationError(f"{mf} is not valid JSON: {exc}") from exc
        try:
            tensors = load_file(str(wf))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
            raise ValidationError(f"{wf} is not a valid safetensors file: {exc}") from exc
        return cls(tensors, meta, d)

    def save(self, out: str | Path) -> Path:
        """Write both files (each to a temporary name, then renamed into place)."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp_w, tmp_m = out / f".{WEIGHTS_FILE}.tmp", out / f".{META_FILE}.tmp"
        save_file({k: v.contiguous() for k, v in sorted(self.tensors.items())}, str(tmp_w),
                  metadata={"format": f"{FORMAT}/{FORMAT_VERSION}"})  # one key: the header's key order is not fixed
        tmp_m.write_text(json.dumps(self.meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp_w, out / WEIGHTS_FILE)
        os.replace(tmp_m, out / META_FILE)
        self.path = out
        return out

    # ---- applying -----------------------------------------------------------------
    def check_target(self, target: Any) -> None:
        """Refuse at once a counterfactual model this adapter cannot apply to: not a model name, path or
        ``(model, tokenizer)`` pair, or another registered model (the weights are checked by :meth:`check_base`)."""
        if isinstance(target, str):
            from ..models.registry import KNOWN_MODELS

            if target != self.base_model and target in KNOWN_MODELS:
                raise ValidationError(f"the SERAC adapter at {self.path} was trained on {self.base_model}, "
                                      f"not {target}")
        elif not (isinstance(target, tuple) and len(target) == 2):
            raise ValidationError("a SERAC adapter needs a local counterfactual model: a model name or path, or a "
                                  f"(model, tokenizer) pair, got {type(target).__name__}")

    def check_base(self, model: Any, name: str | None = None) -> None:
        """Raise ValidationError unless ``model`` is the model this adapter was trained on (weights and shapes)."""
        import torch

        where = str(self.path) if self.path else "the adapter"
        mods = dict(model.named_modules())
        for mod in self.modules:
            lin = mods.get(mod)
            a, b = self.tensors[f"{mod}.lora_A"], self.tensors[f"{mod}.lora_B"]
            if not isinstance(lin, torch.nn.Linear) or tuple(lin.weight.shape) != (b.shape[0], a.shape[1]):
                raise ValidationError(f"{where} was trained on {self.base_model}; "
                                      f"{name or type(model).__name__} has no matching layer {mod}")
        got = base_fingerprint(model)
        if got != self.meta["base_weights_sha256"]:
            raise ValidationError(
                f"{where} was trained on {self.base_model} (weights sha256 {self.meta['base_weights_sha256'][:12]}…); "
                f"{name or type(model).__name__} has different weights (sha256 {got[:12]}…): refusing to apply it")

    def merge_into(self, model: Any, name: str | None = None) -> Any:
        """Check ``model`` (see :meth:`check_base`), then add ``scale * B @ A`` to each adapted weight, in place."""
        import torch

        self.check_base(model, name)
        mods = dict(model.named_modules())
        with torch.no_grad():
            for mod in self.modules:
                w = mods[mod].weight
                a = self.tensors[f"{mod}.lora_A"].to(w.device, torch.float32)
                b = self.tensors[f"{mod}.lora_B"].to(w.device, torch.float32)
                w.add_(((b @ a) * self.scale).to(w.dtype))
        return model


def packaged_adapter_available() -> bool:
    """Whether this installation ships the trained adapter (``memedit/resources/serac-adapter/``)."""
    return (PACKAGED_DIR / WEIGHTS_FILE).is_file() and (PACKAGED_DIR / META_FILE).is_file()


def load_counterfactual(adapter: "str | Path | LoRAAdapter", counterfactual: Any = None, *, device: Any = "cpu",
                        dtype: Any = "float32", max_new_tokens: int | None = None) -> "LocalLM":
    """The counterfactual model: a private copy of the base model with the adapter merged in.

    ``counterfactual``: a model name or path (default: the adapter's base) or
    a ``(model, tokenizer)`` pair (deep-copied: the caller's model is never
    changed). The weights are checked against the adapter before merging, in
    float32; the result is then cast to ``dtype``.
    """
    from ..models.backends import DEFAULT_MAX_NEW_TOKENS, LocalLM

    ad = LoRAAdapter.load(adapter)
    target = counterfactual if counterfactual is not None else ad.base_model
    ad.check_target(target)
    if isinstance(target, str):
        from ..models.registry import load_causal_lm

        model, tok = load_causal_lm(target, device="cpu", dtype="float32", reuse=False)
        name = target
    else:
        model, tok = copy.deepcopy(target[0]), target[1]
        model.float()
        name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
    ad.merge_into(model, name)
    from ..models.registry import parse_dtype

    model.to(device=device, dtype=parse_dtype(dtype))
    model.eval()
    return LocalLM(model, tok, name=f"{name}+serac-adapter",
                   max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
