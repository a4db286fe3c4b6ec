"""Short context prefixes put before an edit's prompt (ROME's "context templates").

>>> from memedit.methods.rome.contexts import context_prefixes      # doctest: +SKIP
>>> context_prefixes(model, tok, n=5, length=10)                      # doctest: +SKIP
('The first time I saw the movie, I was. ', ...)

The key of an edit is the subject's representation averaged over these
contexts, so the edit holds whatever text precedes the subject. They are
sampled from the model itself once (seeded, top-k 5, starting from ROME's
seed words), then kept in memory for the process and on disk under
``cache_dir()/prefixes/`` as JSON, so every later edit - and every later
process - uses the same ones.
"""
from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import torch

SEED_WORDS = ("The", "Therefore", "Because", "I", "You")

_MEMO: dict[str, tuple[str, ...]] = {}
_LOCK = threading.Lock()


def _embedding_fingerprint(model: Any) -> str:
    """A hash of a strided sample of the input embeddings: tells apart two models of one shape (two random
    initialisations, two fine-tunes) without hashing every weight, and stays put when an MLP is edited."""
    emb = model.get_input_embeddings().weight.detach()
    flat = emb.reshape(-1)
    sample = flat[:: max(1, flat.numel() // 65536)].to("cpu", torch.float32).contiguous()
    return hashlib.sha256(sample.numpy().tobytes() + str(tuple(emb.shape)).encode()).hexdigest()[:16]


def _key(model: Any, n: int, length: int, seed: int) -> str:
    cfg = model.config
    ident = {
        "weights": _embedding_fingerprint(model),
        "name": str(getattr(cfg, "name_or_path", "") or getattr(cfg, "_name_or_path", "")),
        "type": cfg.model_type,
        "vocab": getattr(cfg, "vocab_size", None),
        "shape": [p.shape[0] for p in list(model.parameters())[:3]],
        "n": n, "length": length, "seed": seed,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def context_prefixes(model: Any, tok: Any, n: int = 5, length: int = 10, seed: int = 0,
                     cache: bool = True) -> tuple[str, ...]:
    """``n`` prefixes of about ``length`` tokens, each ending in ``". "``; ``()`` when ``n == 0``."""
    if n <= 0:
        return ()
    key = _key(model, n, length, seed)
    with _LOCK:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
    path = None
    if cache:
        from ...config import cache_dir

        path = cache_dir() / "prefixes" / f"{key}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, list) and len(data) == n and all(isinstance(x, str) for x in data):
                    with _LOCK:
                        _MEMO[key] = tuple(data)
                    return tuple(data)
            except ValueError:
                pass
    prefixes = _generate(model, tok, n, length, seed)
    with _LOCK:
        _MEMO[key] = prefixes
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(prefixes), ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(path)
    return prefixes


def _generate(model: Any, tok: Any, n: int, length: int, seed: int) -> tuple[str, ...]:
    device = next(model.parameters()).device
    seeds = [SEED_WORDS[i % len(SEED_WORDS)] for i in range(n)]
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(seeds, return_tensors="pt", padding=True).to(device)
    finally:
        tok.padding_side = old_side
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(**enc, do_sample=True, top_k=5, max_new_tokens=length, min_new_tokens=length,
                             pad_token_id=tok.pad_token_id, temperature=1.0, top_p=1.0)
    texts = tok.batch_decode(out, skip_special_tokens=True)  # seed word + continuation, spaced by the tokenizer
    result = []
    for text in texts:
        text = " ".join(text.replace("{", " ").replace("}", " ").split())
        result.append(text + ". ")
    return tuple(result)
