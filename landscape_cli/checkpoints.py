"""Checkpoints: the format ``landscape train`` writes, and loading whatever other tools write.

The landscape format (DESIGN.md) is a ``torch.save`` of a dict that ``torch.load(...,
weights_only=True)`` accepts: tensors, numbers, strings, lists and dicts only::

    format: "landscape-checkpoint", version: 1
    model:      {name, kwargs: {input_shape, num_classes, ...options}}
    dataset:    {name, root, ...}
    state_dict: model weights
    optimizer:  {name, hparams, state_dict}        (the step counter included)
    train:      {epoch, step, seed, config, history: {train_loss: [...], ...}}

Other files load too: a bare state dict, a dict holding one under ``state_dict`` or ``model``
(training loops, PyTorch Lightning), and ``.safetensors`` files. Those carry no model spec, so
the caller names the architecture. When every key of a file matches the model after removing
one common prefix (``module.`` from DataParallel/DDP, ``_orig_mod.`` from torch.compile,
``model.`` from a Lightning module, or any other, nested ones such as ``model.module.``
included), the prefix is removed and said so (:func:`match_keys`, :attr:`LoadedModel.notes`).
A file without a class count built for the wrong number of classes is named by its
classifier head's width (:func:`head_width`), with the option that fits it.

Safety: every ``.pt``/``.pth`` file is read with ``weights_only=True``, which refuses arbitrary
pickled objects (a pickle can run any code when it is loaded). A file holding a whole pickled
``nn.Module`` is refused unless the caller passes ``trust=True`` (``--trust-checkpoint``).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_cli.errors import LandscapeError

FORMAT = "landscape-checkpoint"
VERSION = 1
_TRUST_HINT = "pass `trust=True` only if you trust where the file came from"


def training_checkpoint(
    config: Mapping[str, Any],
    *,
    model: nn.Module,
    model_kwargs: Mapping[str, Any],
    data_shape: Sequence[int],
    num_classes: int | None,
    optimizer: torch.optim.Optimizer,
    hparams: Mapping[str, Any],
    epoch: int,
    step: int,
    history: Mapping[str, list[float]],
) -> dict[str, Any]:
    """The landscape checkpoint (the format above) of a run after ``epoch`` epochs, ``step`` steps.

    ``config`` is the run's training config as plain data (``asdict(TrainConfig)``): its
    ``model``, ``dataset``, ``data_root``, ``loss``, ``optimizer`` and ``seed`` name what the
    file holds. ``model_kwargs`` are the model's constructor arguments, ``data_shape`` and
    ``num_classes`` the dataset's; the weights are copied to the CPU.
    """
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "name": config["model"],
            "kwargs": {**model_kwargs, "input_shape": list(model_kwargs["input_shape"])},
        },
        "loss": config["loss"],
        "dataset": {
            "name": config["dataset"],
            "root": config["data_root"],
            "input_shape": list(data_shape),
            "num_classes": num_classes,
        },
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": {
            "name": config["optimizer"],
            "hparams": hparams,
            "state_dict": optimizer.state_dict(),
        },
        "train": {
            "epoch": epoch,
            "step": step,
            "seed": config["seed"],
            "config": dict(config),
            "history": history,
            "torch_version": str(torch.__version__),
        },
    }


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Mapping[str, Any]) -> Path:
    """Write ``checkpoint`` atomically: to a temporary file beside ``path``, then rename.

    A run killed mid-write leaves the previous checkpoint intact, never a truncated one. The
    file's mode is that of the file it replaces, else ``0o666`` less the umask (as for any new
    file, and as results files get), not the temporary file's private ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(checkpoint), fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_file(path: str | os.PathLike[str], *, trust: bool = False) -> Any:
    """Read a checkpoint file safely; raise :class:`LandscapeError` with one clear line if not.

    ``.safetensors`` files are read with safetensors (a flat dict of tensors). Everything else
    goes through ``torch.load(weights_only=True)`` unless ``trust`` is set.
    """
    path = Path(path)
    if not path.exists():
        raise LandscapeError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise LandscapeError(f"checkpoint is a directory, not a file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise LandscapeError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        with (
            warnings.catch_warnings()
        ):  # torch's pickle-protocol chatter is not the user's business
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names the class it refused ("Unsupported global: ...");
        # anything else it rejects (a bad opcode) is simply not a checkpoint.
        if "global" in str(exc).lower():
            raise LandscapeError(
                f"{path} holds pickled Python objects (for example a whole nn.Module), which "
                f"can run arbitrary code when loaded; {_TRUST_HINT}"
            ) from None
        detail = [ln.strip() for ln in str(exc).splitlines() if "unsupported" in ln.lower()]
        reason = (
            detail[0].removeprefix("WeightsUnpickler error:").strip() if detail else "unreadable"
        )
        raise LandscapeError(f"{path} is not a PyTorch checkpoint ({reason})") from None
    except Exception as exc:  # torch.load fails in many ways on files that are not checkpoints
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LandscapeError(f"{path} is not a PyTorch checkpoint ({reason})") from None


def stored_model_spec(ckpt: Mapping[str, Any], path: Path, *, trust: bool = False) -> dict:
    """The model spec a landscape checkpoint records, checked before anything is built.

    The name must be a built-in one unless ``trust`` (see
    :func:`landscape_cli.specs.check_file_spec`), and the keyword arguments plain data.
    """
    from landscape_cli.specs import check_file_spec, check_plain

    entry = ckpt.get("model")
    if not isinstance(entry, Mapping):
        raise LandscapeError(f"{path} is a landscape checkpoint without a model spec")
    name = check_file_spec(entry.get("name"), "model", str(path), trust=trust)
    kwargs = entry.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise LandscapeError(f"{path}: the model's kwargs are not a dict")
    kwargs = dict(check_plain(dict(kwargs), "the model's kwargs", str(path)))
    return {"name": name, "kwargs": kwargs}


def check_version(ckpt: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse a landscape checkpoint whose format version this tool does not know."""
    version = ckpt.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
        raise LandscapeError(
            f"{path} is a landscape checkpoint of version {version!r}; this tool reads up "
            f"to version {VERSION}: upgrade landscape"
        )


def is_landscape_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` is a checkpoint dict written by landscape."""
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(torch.is_tensor(v) for v in obj.values())
    )


def common_prefixes(keys: Sequence[str]) -> list[str]:
    """Every prefix ending in ``.`` that all ``keys`` share, shortest first.

    Every prefix ending in ``.`` that all ``keys`` share, shortest first (``model.``,
    ``model.module.``, ...); empty when they share none.
    """
    keys = list(keys)
    if not keys:
        return []
    first, out = keys[0], []
    dot = first.find(".")
    while dot >= 0:
        prefix = first[: dot + 1]
        if not all(k.startswith(prefix) and len(k) > len(prefix) for k in keys):
            break
        out.append(prefix)
        dot = first.find(".", dot + 1)
    return out


def match_keys(state_keys: Iterable[str], model_keys: Iterable[str]) -> str | None:
    """The one prefix whose removal from every key of a file makes its keys those of the model.

    ``""`` when the keys already agree; ``"model."`` (Lightning), ``"module."`` (DDP),
    ``"_orig_mod."`` (torch.compile), ``"model.module."`` (nested) or any other prefix that
    *every* key of the file carries and whose removal leaves exactly ``model_keys``; None when
    no such prefix exists (a key set that matches only in part is never guessed at).
    """
    state, wanted = list(state_keys), set(model_keys)
    if set(state) == wanted:
        return ""
    for prefix in common_prefixes(state):
        if {k[len(prefix) :] for k in state} == wanted:
            return prefix
    return None


def _closest_prefix(state_keys: Sequence[str], model_keys: set[str]) -> str:
    """The key prefix closest to fitting, for the message about a file that does not fit.

    The common prefix (or none) whose removal leaves the most keys of the model.
    """
    candidates = ["", *common_prefixes(state_keys)]
    return max(candidates, key=lambda p: sum(k[len(p) :] in model_keys for k in state_keys))


def _strip(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items()} if prefix else dict(state_dict)


def extract_weights(obj: Any, source: str) -> dict[str, torch.Tensor] | nn.Module:
    """The model weights inside a loaded file: a state dict (keys as stored) or a module."""
    if isinstance(obj, nn.Module):
        return obj
    if is_landscape_checkpoint(obj):
        return dict(obj["state_dict"])
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net", "module"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner
            if _is_state_dict(inner):
                return dict(inner)
    raise LandscapeError(
        f"{source} holds no model weights: expected a state dict (name -> tensor), or one under "
        "a 'state_dict' or 'model' key"
    )


def _some(items: list[str], limit: int = 2) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def mismatch_summary(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    """How weights do not fit a model, in one clause: counts and the first keys of each kind.

    ``shapes`` holds ``"key (file shape) vs (model shape)"`` texts. The same words for every
    kind of weights file (``.pt``/``.safetensors`` files and Hugging Face folders).
    """
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_some(unexpected)})")
    if shapes:
        noun = "shape mismatch" if len(shapes) == 1 else "shape mismatches"
        parts.append(f"{len(shapes)} {noun}, file vs model ({_some(shapes)})")
    return "; ".join(parts)


def fit_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> str:
    """Load ``state_dict`` into ``model`` strictly, after removing its key prefix.

    Load ``state_dict`` into ``model`` strictly, after removing the one prefix that
    :func:`match_keys` finds; returns that prefix (``""`` for none).

    On a mismatch, raises one :class:`LandscapeError` line: how many keys are missing,
    unexpected or of another shape, with the first of each (never a wall of keys).
    """
    own = model.state_dict()
    keys = list(state_dict)
    prefix = match_keys(keys, own)
    fits = prefix is not None
    if prefix is None:
        prefix = _closest_prefix(keys, set(own))
    state = _strip(state_dict, prefix)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not fits or shapes:
        removed = f" after removing the prefix {prefix!r}" if prefix else ""
        raise LandscapeError(
            f"{source} does not fit the model ({type(model).__name__}){removed}: "
            + mismatch_summary(missing, unexpected, shapes)
            + "; check `model` and `model_options`"
        )
    model.load_state_dict(state, strict=True)
    return prefix


def head_width(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], num_classes: int
) -> tuple[int, str] | None:
    """The classifier head's width in a file that differs from ``model`` only in its classes.

    The classifier head's width in a file that does not fit ``model`` only by its number
    of classes: ``(width, key)`` when every key matches (after the prefix of
    :func:`match_keys`) and every shape mismatch is a leading dimension that is
    ``num_classes`` in the model and one same ``width`` in the file (``fc.weight`` (10, 512) vs
    (3, 512) and ``fc.bias`` (10,) vs (3,) give ``(10, "fc.weight")``); None otherwise.
    """
    own = model.state_dict()
    prefix = match_keys(list(state_dict), own)
    if prefix is None:
        return None
    state = _strip(state_dict, prefix)
    widths, first = set(), None
    for key, mine in own.items():
        theirs = state[key]
        if tuple(theirs.shape) == tuple(mine.shape):
            continue
        if theirs.dim() != mine.dim() or theirs.dim() == 0:
            return None
        if tuple(theirs.shape[1:]) != tuple(mine.shape[1:]) or mine.shape[0] != num_classes:
            return None
        widths.add(int(theirs.shape[0]))
        first = first or key
    if len(widths) != 1 or first is None:
        return None
    return widths.pop(), first


def _prefix_note(prefix: str) -> str:
    return f"removed the prefix {prefix!r} from every key of the state dict"


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint, with what the file said about how it was made."""

    model: nn.Module
    model_spec: dict[str, Any]
    dataset_spec: dict[str, Any] | None
    path: Path
    kind: str  # "landscape" | "state_dict" | "safetensors" | "module"
    checkpoint: dict[str, Any] | None = field(default=None, repr=False)
    prefix: str = ""  # removed from every key of the file's state dict (match_keys)
    notes: tuple[str, ...] = ()  # what the user should know about how the file was read


def load_model(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    model_options: Mapping[str, Any] | None = None,
    trust: bool = False,
    contents: Any = None,
) -> LoadedModel:
    """Rebuild the model stored at ``path`` (on the CPU).

    A landscape checkpoint names its own architecture; ``model`` (a registry name,
    ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory``) overrides it and is
    required for files that carry no spec, built for ``input_shape``/``num_classes`` (normally
    the dataset's). ``contents`` is what :func:`read_file` already returned for ``path``, to
    avoid reading twice. A prefix removed from the file's keys is in ``prefix`` and ``notes``; a
    file without a class count whose classifier head has another width than ``num_classes`` (and
    no ``num_classes`` among ``model_options``) is refused in one line naming
    ``--model-option num_classes=WIDTH``.
    """
    from landscape_cli.models import build_model

    path = Path(path)
    obj = contents if contents is not None else read_file(path, trust=trust)
    weights = extract_weights(obj, str(path))
    if isinstance(weights, nn.Module):
        spec = {"name": f"module:{type(weights).__module__}.{type(weights).__qualname__}"}
        return LoadedModel(weights.float().cpu(), spec, None, path, "module")

    ckpt = obj if is_landscape_checkpoint(obj) else None
    if ckpt is not None:
        check_version(ckpt, path)
    spec = _model_spec(path, ckpt, model, input_shape, num_classes, model_options, trust)
    kwargs = dict(spec["kwargs"])
    try:
        shape = tuple(int(d) for d in kwargs.pop("input_shape"))
        classes = int(kwargs.pop("num_classes"))
    except (KeyError, TypeError, ValueError):
        raise LandscapeError(
            f"{path}: the model spec lacks a valid input_shape and num_classes"
        ) from None
    net = build_model(spec["name"], input_shape=shape, num_classes=classes, **kwargs)
    name_head = ckpt is None and "num_classes" not in (model_options or {})
    prefix = _fit(net, weights, path, spec["name"], shape, classes, kwargs, name_head)
    kind = (
        "landscape"
        if ckpt is not None
        else ("safetensors" if path.suffix == ".safetensors" else "state_dict")
    )
    dataset_spec = dict(ckpt["dataset"]) if ckpt is not None and "dataset" in ckpt else None
    notes = (_prefix_note(prefix),) if prefix else ()
    return LoadedModel(net, spec, dataset_spec, path, kind, ckpt, prefix=prefix, notes=notes)


def _model_spec(
    path: Path,
    ckpt: Mapping[str, Any] | None,
    model: str | None,
    input_shape: tuple[int, ...] | None,
    num_classes: int | None,
    model_options: Mapping[str, Any] | None,
    trust: bool,
) -> dict[str, Any]:
    """The model spec ``{name, kwargs}`` to build.

    ``model`` for the dataset's shape and classes when given, else the spec a landscape checkpoint
    stores (a file without one needs ``model``).
    """
    if model is None and ckpt is not None:
        return stored_model_spec(ckpt, path, trust=trust)
    if model is None:
        raise LandscapeError(
            f"{path} carries no model spec; pass `model` (a name such as resnet18, "
            "torchvision:NAME, timm:NAME, or package.module:factory)"
        )
    if input_shape is None or num_classes is None:
        raise LandscapeError("`model` needs the dataset's input shape and number of classes")
    kwargs = {"input_shape": list(input_shape), "num_classes": int(num_classes)}
    kwargs.update(model_options or {})
    return {"name": model, "kwargs": kwargs}


def _fit(
    net: nn.Module,
    weights: Mapping[str, Any],
    path: Path,
    name: str,
    shape: tuple[int, ...],
    classes: int,
    kwargs: Mapping[str, Any],
    name_head: bool,
) -> str:
    """Load ``weights`` into ``net`` (:func:`fit_state_dict`; returns the prefix removed).

    With ``name_head`` (a file without a class count, no ``num_classes`` option), weights built
    for another number of classes are refused by naming their head's width, once the model
    built with that width is known to take the file.
    """
    from landscape_cli.models import build_model

    try:
        return fit_state_dict(net, weights, str(path))
    except LandscapeError as exc:
        found = head_width(net, weights, classes) if name_head else None
        if found is None:
            raise
        width, key = found
        try:
            wide = build_model(name, input_shape=shape, num_classes=width, **kwargs)
            fit_state_dict(wide, weights, str(path))
        except LandscapeError:
            raise exc from None
        raise LandscapeError(_head_message(path, key, width, classes)) from None


def _head_message(path: Path, key: str, width: int, classes: int) -> str:
    """One line for a classifier head of ``width`` outputs measured on ``classes`` classes."""
    head = f"{path}: its classifier head {key} has {width} outputs but the dataset has {classes}"
    if width > classes:
        return (
            f"{head} classes; pass `model_options={{'num_classes': {width}}}` to measure its "
            f"{width}-way output on these {classes} classes, or the `dataset` it was trained on"
        )
    return (
        f"{head} classes (labels up to {classes - 1}); pass the `dataset` it was trained on "
        f"({width} classes)"
    )
