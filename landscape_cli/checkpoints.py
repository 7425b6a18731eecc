"""Checkpoints: the format ``landscape train`` writes, and loading whatever other tools write.

The landscape format is a ``torch.save`` of a dict that ``torch.load(...,
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

import hashlib
import inspect
import io
import math
import os
import pickle
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_cli import files, models, resources
from landscape_cli.errors import LandscapeError
from landscape_cli.files import check_input
from landscape_cli.models.hf import weight_files
from landscape_cli.specs import check_file_spec, check_plain

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
    file, and as results files get). :func:`landscape_cli.files.write_atomic` writes it (a full
    disk raises :class:`~landscape_cli.files.WriteError`, leaving nothing behind).
    """
    return files.write_atomic(path, checkpoint_bytes(checkpoint), what="checkpoint")


def checkpoint_bytes(checkpoint: Mapping[str, Any]) -> memoryview:
    """The bytes of ``torch.save(dict(checkpoint))``, made in memory.

    Serialising first means a full disk fails a plain write (a clean error), never inside torch.
    """
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    return buffer.getbuffer()


def sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 that identifies a checkpoint (a results file's ``checkpoint_sha256``).

    A file's own SHA-256, read in 1 MiB chunks. For a Hugging Face model folder: the SHA-256 of
    the lines ``<name> <sha256>`` of its weight files (``*.safetensors``, ``*.bin`` and their index
    files, :func:`landscape_cli.models.hf.weight_files`), sorted by name, so that notes or a
    tokenizer beside the weights do not change it.
    """
    if os.path.isdir(path):
        lines = [f"{f.name} {sha256(f)}\n" for f in weight_files(Path(path))]
        return hashlib.sha256("".join(lines).encode()).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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

    check_input(path, "checkpoint")  # a FIFO or a device would block or never end
    if path.suffix == ".safetensors":
        # lazy: only .safetensors files need safetensors
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


# --------------------------------------------------------------------------------------------------
# typed checks of what a file holds (one place: every entry a command uses is checked here first)


def _kind_of(value: Any) -> str:
    if value is None:
        return "None"
    if torch.is_tensor(value):
        return f"a {'sparse ' if value.layout != torch.strided else ''}tensor"
    if isinstance(value, bool):
        return f"{value} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{value[:40]!r} (a string)"
    return f"a {type(value).__name__}"


def _bad(path: Any, where: str, value: Any, expected: str) -> LandscapeError:
    return LandscapeError(f"{path}: {where} is {_kind_of(value)}, expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def tensor_problem(value: Any) -> str | None:
    """Why ``value`` is not a weight landscape can load (a dense, real, CPU tensor), or None."""
    if not torch.is_tensor(value):
        return f"is {_kind_of(value)}, not a tensor"
    if value.layout != torch.strided or value.is_sparse:
        return f"is a {str(value.layout).removeprefix('torch.')} tensor, not a dense one"
    if getattr(value, "is_nested", False):
        return "is a nested tensor, not a dense one"
    if value.is_meta or value.device.type != "cpu":
        return f"is a tensor on the {value.device.type} device, which holds no values"
    if value.is_quantized:
        return "is a quantized tensor"
    if value.is_complex():
        return f"is a complex tensor ({str(value.dtype).removeprefix('torch.')})"
    return None


def check_weights(weights: Any, source: str) -> dict[str, torch.Tensor]:
    """``weights`` checked as a state dict: a non-empty mapping from names to loadable tensors."""
    if not isinstance(weights, Mapping) or not weights:
        raise LandscapeError(
            f"{source}: its weights are {_kind_of(weights) if weights else 'empty'}, expected a "
            "state dict (parameter name -> tensor)"
        )
    for key, value in weights.items():
        if not isinstance(key, str):
            raise LandscapeError(f"{source}: its state dict has a key {key!r} that is not a name")
        problem = tensor_problem(value)
        if problem is not None:
            raise LandscapeError(f"{source}: the weight {key!r} {problem}")
    return dict(weights)


def _need(entry: Mapping[str, Any], key: str, test, expected: str, path: Any, where: str) -> Any:
    """``entry[key]`` when present and ``test`` holds for it; one error line naming it otherwise."""
    if key not in entry:
        raise LandscapeError(f"{path}: {where}{key!r} is missing, expected {expected}")
    value = entry[key]
    if not test(value):
        raise _bad(path, f"{where}{key!r}", value, expected)
    return value


#: The per-epoch series a resumed run appends to (``train.history``).
HISTORY_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")


def check_checkpoint(ckpt: Mapping[str, Any], path: Any, *, resume: bool = False) -> None:
    """Check the entries of a landscape checkpoint for their types before anything uses them.

    Always: ``version`` (:func:`check_version`), ``model`` (a mapping), ``state_dict`` (a
    state dict of dense real tensors, :func:`check_weights`), and where present ``dataset`` (a
    mapping) and ``loss`` (a string). With ``resume`` (what ``train --resume`` continues), also:
    ``optimizer`` ({``name``: str, ``hparams``: {str: finite number, ``lr`` > 0},
    ``state_dict``: a mapping}) and ``train`` ({``epoch``, ``step``: integers >= 0, ``seed`` in
    the seed domain, ``config``: a mapping, ``history``: {str: list of numbers}, with every
    series a run appends to}). The optimizer state itself is checked against the optimizer
    that will take it (:func:`check_optimizer_state`).
    """
    check_version(ckpt, path)
    is_map = lambda v: isinstance(v, Mapping)  # noqa: E731
    _need(ckpt, "model", is_map, "a mapping {name, kwargs}", path, "")
    state = _need(ckpt, "state_dict", is_map, "a state dict (name -> tensor)", path, "")
    check_weights(state, str(path))
    if "dataset" in ckpt and ckpt["dataset"] is not None and not is_map(ckpt["dataset"]):
        raise _bad(path, "'dataset'", ckpt["dataset"], "a mapping {name, root, ...}")
    if "loss" in ckpt and ckpt["loss"] is not None and not isinstance(ckpt["loss"], str):
        raise _bad(path, "'loss'", ckpt["loss"], "a string (ce or mse)")
    if not resume:
        return
    opt = _need(ckpt, "optimizer", is_map, "a mapping {name, hparams, state_dict}", path, "")
    _need(opt, "name", lambda v: isinstance(v, str), "a string", path, "the optimizer's ")
    hparams = _need(opt, "hparams", is_map, "a mapping", path, "the optimizer's ")
    for key, value in hparams.items():
        if not (isinstance(key, str) and _is_real(value) and math.isfinite(value)):
            raise _bad(path, f"the optimizer's hyperparameter {key!r}", value, "a finite number")
    _need(hparams, "lr", lambda v: v > 0, "a number > 0", path, "the optimizer's hyperparameter ")
    _need(opt, "state_dict", is_map, "a mapping {state, param_groups}", path, "the optimizer's ")
    run = _need(ckpt, "train", is_map, "a mapping {epoch, step, config, history}", path, "")
    where = "the training state's "
    count = lambda v: _is_int(v) and v >= 0  # noqa: E731
    _need(run, "epoch", count, "an integer >= 0", path, where)
    _need(run, "step", count, "an integer >= 0", path, where)
    if "seed" in run and not resources.DOMAINS["seed"].holds(run["seed"]):
        raise _bad(path, f"{where}'seed'", run["seed"], resources.DOMAINS["seed"].text())
    _need(run, "config", is_map, "a mapping of the training options", path, where)
    history = _need(run, "history", is_map, "a mapping {series: [numbers]}", path, where)
    for key in HISTORY_KEYS:
        is_list = lambda v: isinstance(v, list)  # noqa: E731
        _need(history, key, is_list, "a list of numbers", path, "the training history's ")
    for key, value in history.items():
        if not (isinstance(key, str) and isinstance(value, list)):
            raise _bad(path, f"the training history's {key!r}", value, "a list of numbers")
        bad = [i for i, v in enumerate(value) if not _is_real(v)]
        if bad:
            item = f"the training history's {key!r} at [{bad[0]}]"
            raise _bad(path, item, value[bad[0]], "a number")


def _optimizer_reference(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The first param group and the per-parameter state of ``optimizer``'s class after a step.

    Built on one scalar parameter with the optimizer's own defaults: what this torch's (or
    DualAdam's) optimizer keeps, key by key, whatever its version.
    """
    cls = type(optimizer)
    names = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in optimizer.defaults.items() if k in names}
    p = torch.zeros(1, requires_grad=True)
    shadow = cls([p], **kwargs)
    p.grad = torch.zeros(1)
    shadow.step()
    return dict(shadow.param_groups[0]), dict(shadow.state[p])


def _same_kind(value: Any, ref: Any) -> bool:
    """Whether a param-group value is of the kind the optimizer keeps there (``ref``'s)."""
    if ref is None or isinstance(ref, bool):
        return value is None or isinstance(value, bool)
    if _is_real(ref) or torch.is_tensor(ref):
        if torch.is_tensor(value):
            return value.numel() == 1 and not value.is_complex()
        return _is_real(value) and math.isfinite(value)
    if isinstance(ref, (tuple, list)):
        return (
            isinstance(value, (tuple, list))
            and len(value) == len(ref)
            and all(_is_real(v) and math.isfinite(v) for v in value)
        )
    return isinstance(value, type(ref))


def check_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: Any, path: Any) -> None:
    """Refuse an optimizer state that ``optimizer`` cannot continue from, in one line.

    ``state_dict`` must be ``{state: {index: {key: value}}, param_groups: [...]}`` with as many
    groups and parameters as ``optimizer``; each group must hold every setting the optimizer
    keeps, of its kind (numbers, tuples of numbers, booleans); each parameter's state must be
    empty or hold exactly the keys this optimizer keeps (so Adam's moments under SGD, or SGD's
    momentum under Adam, are refused: the optimizer does not match its state), its buffers
    shaped like the parameter and finite, its counters single finite numbers.
    """
    name = type(optimizer).__name__
    where = f"{path}: the optimizer state"
    if not isinstance(state_dict, Mapping):
        raise _bad(path, "the optimizer state", state_dict, "a mapping {state, param_groups}")
    state, groups = state_dict.get("state"), state_dict.get("param_groups")
    if not isinstance(state, Mapping) or not isinstance(groups, list):
        raise LandscapeError(f"{where} is not {{state: {{...}}, param_groups: [...]}}")
    if len(groups) != len(optimizer.param_groups):
        raise LandscapeError(
            f"{where} has {len(groups)} parameter groups but the run's {name} has "
            f"{len(optimizer.param_groups)}"
        )
    ref_group, ref_state = _optimizer_reference(optimizer)
    params: dict[Any, torch.Tensor] = {}
    for i, (group, mine) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        ids = group.get("params") if isinstance(group, Mapping) else None
        if not (isinstance(ids, list) and all(_is_int(x) for x in ids)):
            raise LandscapeError(f"{where}: parameter group {i} does not list its parameters")
        if len(ids) != len(mine["params"]):
            raise LandscapeError(
                f"{where}: parameter group {i} has {len(ids)} parameters but the model has "
                f"{len(mine['params'])}"
            )
        for key, ref in ref_group.items():
            if key == "params":
                continue
            if key not in group or not _same_kind(group[key], ref):
                shown = _kind_of(group[key]) if key in group else "missing"
                raise LandscapeError(
                    f"{where}: parameter group {i} has {key} {shown}, but {name} keeps "
                    f"{_kind_of(ref)} there"
                )
        params.update(zip(ids, mine["params"], strict=True))
    unknown = [k for k in state if k not in params]
    if unknown:
        raise LandscapeError(
            f"{where} holds the state of parameter {unknown[0]!r}, not in any group"
        )
    for index, entry in state.items():
        param = params[index]
        if not isinstance(entry, Mapping):
            raise _bad(path, f"the optimizer state of parameter {index}", entry, "a mapping")
        if entry and set(entry) != set(ref_state):
            raise LandscapeError(
                f"{where} of parameter {index} holds {sorted(map(str, entry))} but {name} keeps "
                f"{sorted(ref_state)}: the optimizer does not match its state"
            )
        for key, value in entry.items():
            what = f"{where} {key!r} of parameter {index}"
            _check_state_value(value, ref_state[key], param, what, key)


def _check_state_value(value: Any, ref: Any, param: torch.Tensor, where: str, key: str) -> None:
    """One entry of a parameter's optimizer state against the optimizer's own (``ref``)."""
    shaped = torch.is_tensor(ref) and ref.dim() >= 1  # a buffer shaped like the parameter
    if shaped or (ref is None and torch.is_tensor(value)):
        problem = tensor_problem(value)
        if problem is None and tuple(value.shape) != tuple(param.shape):
            problem = f"has shape {tuple(value.shape)}, not the parameter's {tuple(param.shape)}"
        if problem is None and not value.is_floating_point():
            problem = f"has dtype {value.dtype}, not a floating-point one"
        if problem is None and not bool(torch.isfinite(value).all()):
            problem = "holds NaN or infinite values"
        if problem is not None:
            raise LandscapeError(f"{where} {problem}")
        return
    if ref is None:
        if value is not None:
            raise LandscapeError(f"{where} is {_kind_of(value)}, expected None or a tensor")
        return
    if torch.is_tensor(value):
        ok = tensor_problem(value) is None and value.numel() == 1 and not value.is_complex()
        number = float(value.reshape(())) if ok else math.nan
    else:
        ok = _is_real(value)
        number = float(value) if ok else math.nan
    # the optimizers' counters and products (Adam's step, NAdam's mu_product) are >= 0, and a
    # step count is whole: a step of -1 would divide by a zero bias correction
    whole = key != "step" or (math.isfinite(number) and number == int(number))
    if not (ok and math.isfinite(number) and number >= 0 and whole):
        raise LandscapeError(f"{where} is {_kind_of(value)}, expected one finite number >= 0")


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
        if not isinstance(obj.get("state_dict"), Mapping):
            raise LandscapeError(
                f"{source} is a landscape checkpoint whose 'state_dict' is "
                f"{_kind_of(obj['state_dict']) if 'state_dict' in obj else 'missing'}, expected "
                "a state dict (name -> tensor)"
            )
        return check_weights(obj["state_dict"], source)
    if _is_state_dict(obj):
        return check_weights(obj, source)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net", "module"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner
            if _is_state_dict(inner):
                return check_weights(inner, source)
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


def fit_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, *, load: bool = True
) -> str:
    """Load ``state_dict`` into ``model`` strictly, after removing its key prefix.

    Load ``state_dict`` into ``model`` strictly, after removing the one prefix that
    :func:`match_keys` finds; returns that prefix (``""`` for none). With ``load=False`` only
    the keys and shapes are compared (``model`` may live on the meta device).

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
    if load:
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
    path = Path(path)
    obj = contents if contents is not None else read_file(path, trust=trust)
    weights = extract_weights(obj, str(path))
    if isinstance(weights, nn.Module):
        spec = {"name": f"module:{type(weights).__module__}.{type(weights).__qualname__}"}
        return LoadedModel(weights.float().cpu(), spec, None, path, "module")

    ckpt = obj if is_landscape_checkpoint(obj) else None
    if ckpt is not None:
        check_checkpoint(ckpt, path)
    spec = _model_spec(path, ckpt, model, input_shape, num_classes, model_options, trust)
    kwargs = dict(spec["kwargs"])
    try:
        shape = tuple(int(d) for d in kwargs.pop("input_shape"))
        classes = int(kwargs.pop("num_classes"))
    except (KeyError, TypeError, ValueError):
        raise LandscapeError(
            f"{path}: the model spec lacks a valid input_shape and num_classes"
        ) from None
    name_head = ckpt is None and "num_classes" not in (model_options or {})
    # The model's shapes first, on the meta device: weights that do not fit, or a model too
    # large for memory, are refused before its parameters are allocated.
    probe = models.build_meta(spec["name"], input_shape=shape, num_classes=classes, **kwargs)
    if probe is not None:
        _fit(probe, weights, path, spec["name"], shape, classes, kwargs, name_head, load=False)
        resources.require_model(probe)
    net = models.build_model(spec["name"], input_shape=shape, num_classes=classes, **kwargs)
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
    *,
    load: bool = True,
) -> str:
    """Load ``weights`` into ``net`` (:func:`fit_state_dict`; returns the prefix removed).

    With ``name_head`` (a file without a class count, no ``num_classes`` option), weights built
    for another number of classes are refused by naming their head's width, once the model
    built with that width is known to take the file. With ``load=False`` (``net`` on the meta
    device) only the check is made, and the wider model is built on the meta device too.
    """
    try:
        return fit_state_dict(net, weights, str(path), load=load)
    except LandscapeError as exc:
        found = head_width(net, weights, classes) if name_head else None
        if found is None:
            raise
        width, key = found
        try:
            build = models.build_model if load else models.build_meta
            wide = build(name, input_shape=shape, num_classes=width, **kwargs)
            if wide is not None:
                fit_state_dict(wide, weights, str(path), load=load)
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
