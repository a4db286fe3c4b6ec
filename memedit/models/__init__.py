"""Language models for memedit: the offline registry of packaged models and their loading.

>>> from memedit.models import list_models, load_causal_lm, DEFAULT_MODEL
>>> DEFAULT_MODEL
'smollm2-135m-instruct'
>>> model, tok = load_causal_lm(DEFAULT_MODEL, device="cpu", dtype="float32")  # doctest: +SKIP

Importing this package is cheap: torch and transformers are imported only
when a model is resolved or loaded.
"""
from .registry import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    MARKER_FILE,
    ModelInfo,
    ModelSpec,
    UnknownModelError,
    cached_model_path,
    clear_model_cache,
    list_models,
    load_causal_lm,
    parse_dtype,
    read_marker,
    register_model,
    resolve_model,
    unregister_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "MARKER_FILE",
    "ModelInfo",
    "ModelSpec",
    "UnknownModelError",
    "cached_model_path",
    "clear_model_cache",
    "list_models",
    "load_causal_lm",
    "parse_dtype",
    "read_marker",
    "register_model",
    "resolve_model",
    "unregister_model",
]
