"""A BERT sentence encoder in NumPy: the packaged MiniLM without torch, transformers or sentence-transformers.

>>> from memedit.embeddings import packaged_embedder_path
>>> enc = NumpySentenceEncoder.load(packaged_embedder_path())
>>> enc.encode(["Paris is the capital of France."]).shape
(1, 384)

Why it exists: importing sentence-transformers costs 4-9 s per process (torch,
transformers, scikit-learn and its trainer modules), which made ``memedit add``
and ``memedit search`` take ten seconds to embed one sentence. This module
reads the same files (``tokenizer.json`` through the ``tokenizers`` library,
``model.safetensors`` through ``safetensors.numpy``) and runs the same
arithmetic in float32: embeddings, six post-norm encoder layers with exact
(erf, from SciPy) GELU, mean pooling over real tokens, L2 normalisation. Its vectors agree
with sentence-transformers' to about 1e-6 per component (cosine 1 - 1e-12;
``tests/test_bert_numpy.py`` checks both, and that search rankings match).

It loads only the layout it reproduces, checked from the model's own files:
``modules.json`` Transformer -> mean Pooling -> Normalize, a ``bert`` config
with absolute positions and ``gelu``, no prompts. Anything else returns None
from :meth:`NumpySentenceEncoder.load` and :class:`memedit.embeddings.Embedder`
uses sentence-transformers instead.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_MODULES = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize"]


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), in place on a float32 array.

    SciPy's erf: NumPy has none, and the polynomial fits written in NumPy cost
    four to five times as much on the encoder's largest tensor.
    """
    from scipy.special import erf  # ~0.2 s the first time; still far below sentence-transformers' import

    half = x * np.float32(0.5)
    erf(x * np.float32(1 / np.sqrt(2)), out=x)
    x += np.float32(1)
    x *= half
    return x


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


class NumpySentenceEncoder:
    """Mean-pooled, normalised BERT sentence vectors computed with NumPy (see the module doc)."""

    def __init__(self, weights: dict[str, np.ndarray], config: dict, tokenizer: object, max_seq_length: int):
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        w = {k.removeprefix("bert."): v for k, v in weights.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            # Q, K and V as one matrix, each weight transposed once: x @ W.T is then a plain matmul.
            qkv_w = np.concatenate([w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]).T
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append((
                np.ascontiguousarray(qkv_w), qkv_b,
                np.ascontiguousarray(w[p + "attention.output.dense.weight"].T), w[p + "attention.output.dense.bias"],
                (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                np.ascontiguousarray(w[p + "intermediate.dense.weight"].T), w[p + "intermediate.dense.bias"],
                np.ascontiguousarray(w[p + "output.dense.weight"].T), w[p + "output.dense.bias"],
                (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
            ))

    @classmethod
    def load(cls, path: str | Path) -> NumpySentenceEncoder | None:
        """The encoder for a sentence-transformers model directory, or None where its layout is another."""
        root = Path(path)
        modules = _read_json(root / "modules.json")
        config = _read_json(root / "config.json")
        st_config = _read_json(root / "sentence_bert_config.json") or {}
        pooling = _read_json(root / "1_Pooling" / "config.json")
        prompts = _read_json(root / "config_sentence_transformers.json") or {}
        fits = (
            isinstance(modules, list) and [m.get("type") for m in modules] == _MODULES
            and [m.get("path") for m in modules][:2] == ["", "1_Pooling"]
            and isinstance(config, dict) and config.get("model_type") == "bert"
            and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and not config.get("is_decoder") and not config.get("add_cross_attention")
            and isinstance(pooling, dict) and pooling.get("pooling_mode_mean_tokens")
            and not any(v for k, v in pooling.items() if k.startswith("pooling_mode") and k != "pooling_mode_mean_tokens")
            and not prompts.get("prompts") and not prompts.get("default_prompt_name")
            and not st_config.get("do_lower_case")
            and (root / "model.safetensors").is_file() and (root / "tokenizer.json").is_file()
        )
        if not fits:
            return None
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        tok_config = _read_json(root / "tokenizer_config.json") or {}
        limit = min(int(config.get("max_position_embeddings", 512)), int(tok_config.get("model_max_length", 512)))
        max_len = min(int(st_config.get("max_seq_length") or limit), limit)
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_len)
        weights = load_file(str(root / "model.safetensors"))
        if any(v.dtype != np.float32 for k, v in weights.items() if not k.endswith("position_ids")):
            return None
        try:
            return cls(weights, config, tokenizer, max_len)
        except KeyError as exc:  # weights under other names (an older checkpoint's LayerNorm.gamma, a wrapper)
            log.info("%s: no weight %s; leaving this model to sentence-transformers", root, exc)
            return None

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Unit vectors for ``texts``, shape ``(n, dim)``, float32, in the order given."""
        # sentence-transformers strips each text before tokenising; so must we, or vectors differ.
        encodings = self.tokenizer.encode_batch([str(t).strip() for t in texts])
        out = np.zeros((len(encodings), self.dim), dtype=np.float32)
        # Texts of similar length share a batch so little padding is computed.
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="embed", unit="batch")
        for start in starts:
            chunk = order[start:start + batch_size]
            out[chunk] = self._forward([encodings[i] for i in chunk])
        return out

    def _forward(self, encodings: list) -> np.ndarray:
        b, n = len(encodings), max(len(e.ids) for e in encodings)
        ids = np.zeros((b, n), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((b, n), dtype=bool)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            types[row, :len(e.ids)] = e.type_ids
            mask[row, :len(e.ids)] = True
        x = (self.word[ids] + self.token_type[types] + self.position[:n]).reshape(b * n, self.dim)
        x = _layer_norm(x, *self.emb_ln, self.eps)
        h = self.heads
        d = self.dim // h
        scale = np.float32(1 / np.sqrt(d))
        # Padding keys get the most negative float, as transformers' additive mask does; no key row is all padding.
        key_bias = None if mask.all() else np.where(mask, np.float32(0), np.finfo(np.float32).min)[:, None, None, :]
        for qkv_w, qkv_b, o_w, o_b, ln1, i_w, i_b, o2_w, o2_b, ln2 in self.layers:
            # Dense layers on (tokens, features) 2-D arrays, one BLAS call each; heads only for attention.
            qkv = (x @ qkv_w + qkv_b).reshape(b, n, 3, h, d).transpose(2, 0, 3, 1, 4)
            q, k, v = (np.ascontiguousarray(t) for t in qkv)
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= scale
            if key_bias is not None:
                scores += key_bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            attn = (scores @ v).transpose(0, 2, 1, 3).reshape(b * n, self.dim)
            x = _layer_norm(attn @ o_w + o_b + x, *ln1, self.eps)
            x = _layer_norm(_gelu(x @ i_w + i_b) @ o2_w + o2_b + x, *ln2, self.eps)
        weights = mask.reshape(b, n, 1).astype(np.float32)
        pooled = (x.reshape(b, n, self.dim) * weights).sum(1) / np.maximum(weights.sum(1), np.float32(1e-9))
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
