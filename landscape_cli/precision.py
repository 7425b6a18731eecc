"""The float32 arithmetic of the measuring commands: IEEE float32, unless TF32 is allowed.

On NVIDIA GPUs since Ampere, PyTorch may run float32 matrix products and convolutions on the
tensor cores in TF32, which keeps 10 bits of each input's mantissa (float32 keeps 23): cuDNN
convolutions do by default (``torch.backends.cudnn.allow_tf32``), matrix products when
``torch.backends.cuda.matmul.allow_tf32`` or ``torch.set_float32_matmul_precision("high")`` says
so. A Hessian-vector product in TF32 carries relative errors near 1e-3, so a Lanczos residual
certified at 1e-4 would be false, and the CPU and the GPU would disagree in the third digit.

:func:`float32_precision` runs a block in one of two settings and restores the process's own
settings afterwards (also when the block raises), so the library never leaves a caller's
process changed:

- ``allow_tf32=False`` (``"ieee"``, the default of ``hessian``, ``scan`` and ``audit``): TF32 off
  for cuBLAS matrix products and cuDNN convolutions and RNNs, and oneDNN kept at IEEE float32
  on the CPU (no bfloat16 or TF32 there either): every float32 operation is IEEE float32.
- ``allow_tf32=True`` (``"tf32"``, ``--allow-tf32``): TF32 on for cuBLAS and cuDNN, for speed;
  the CPU stays IEEE. Products on a GPU are then accurate to about 1e-3, and so are the
  certificates built on them.

Both PyTorch's legacy switches (``allow_tf32``, ``set_float32_matmul_precision``) and, where
this PyTorch has them (2.9 and later), the per-backend ``fp32_precision`` settings are set
consistently (PyTorch refuses to run a matrix product when the two disagree) and restored. With
float64 products neither setting changes anything.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

__all__ = ["PRECISIONS", "float32_precision", "precision_name", "snapshot", "with_precision"]

#: The names recorded in results files and JSON: TF32 off, or allowed.
PRECISIONS = ("ieee", "tf32")

# (backend, op) pairs of PyTorch's fp32_precision settings ("none" defers to the parent:
# conv -> cuda/all -> generic/all).
_LEAVES = (
    ("generic", "all"),
    ("cuda", "all"),
    ("cuda", "matmul"),
    ("cuda", "conv"),
    ("cuda", "rnn"),
    ("mkldnn", "all"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
)

F = TypeVar("F", bound=Callable[..., Any])


def precision_name(allow_tf32: bool) -> str:
    """``"tf32"`` when TF32 is allowed, else ``"ieee"`` (what results files record)."""
    return "tf32" if allow_tf32 else "ieee"


def _leaves() -> dict[tuple[str, str], str]:
    """The raw fp32_precision setting of each (backend, op) this PyTorch has ({} before 2.9)."""
    get = getattr(torch._C, "_get_fp32_precision_getter", None)
    out: dict[tuple[str, str], str] = {}
    if get is None:
        return out
    for backend, op in _LEAVES:
        try:
            out[(backend, op)] = get(backend, op)
        except RuntimeError:  # a pair this version does not know
            continue
    return out


def _set_leaf(backend: str, op: str, value: str) -> None:
    with contextlib.suppress(RuntimeError):
        torch._C._set_fp32_precision_setter(backend, op, value)


def _resolved(leaves: dict[tuple[str, str], str], backend: str, op: str) -> str:
    """The precision ``backend``/``op`` runs in: "none" defers to backend/all, then generic."""
    value = leaves.get((backend, op), "none")
    if value == "none":
        value = leaves.get((backend, "all"), "none")
    if value == "none":
        value = leaves.get(("generic", "all"), "none")
    return value


def _cudnn_flag(leaves: dict[tuple[str, str], str]) -> bool | None:
    """The legacy ``torch.backends.cudnn.allow_tf32``, or None where it cannot be known.

    PyTorch refuses to read it after a mix of the legacy and the new settings (conv, RNN and the
    legacy flag must agree); when conv and RNN agree, the legacy flag is then the other value.
    """
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        conv = _resolved(leaves, "cuda", "conv") == "tf32"
        rnn = _resolved(leaves, "cuda", "rnn") == "tf32"
        return (not conv) if conv == rnn else None


def _matmul_precision(leaves: dict[tuple[str, str], str]) -> str | None:
    """``torch.get_float32_matmul_precision()``, inferred where PyTorch refuses to read it.

    After a mix of the legacy and the new settings PyTorch refuses to read it; it is then the
    one value that makes its own consistency checks fail as they do (None if none is).
    """
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        pass
    try:  # legacy "not highest" agrees with cuda/matmul's tf32 when this reads
        highest = not torch.backends.cuda.matmul.allow_tf32
    except RuntimeError:  # they disagree: legacy is the other one
        highest = _resolved(leaves, "cuda", "matmul") == "tf32"
    if highest:
        return "highest"
    # Not highest, and refused: oneDNN bf16 without "medium", or tf32 without "high".
    return {"bf16": "high", "tf32": "medium"}.get(_resolved(leaves, "mkldnn", "matmul"))


def snapshot() -> dict[str, Any]:
    """Everything :func:`float32_precision` sets, as readable now (a refusal as its message).

    For tests and checks: equal snapshots before and after a block mean the block left the
    process's float32 settings as they were.
    """

    def read(f: Callable[[], Any]) -> Any:
        try:
            return f()
        except RuntimeError as exc:
            return f"refused: {str(exc)[:60]}"

    return {
        "cuda.matmul.allow_tf32": read(lambda: torch.backends.cuda.matmul.allow_tf32),
        "cudnn.allow_tf32": read(lambda: torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": read(torch.get_float32_matmul_precision),
        **{f"{b}.{o}": v for (b, o), v in _leaves().items()},
    }


def _apply(allow_tf32: bool, leaves: dict[tuple[str, str], str]) -> None:
    torch.backends.cudnn.allow_tf32 = allow_tf32
    if allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True  # legacy "high" + cuda/matmul tf32
    else:
        torch.set_float32_matmul_precision("highest")  # cuda and mkldnn matmul: ieee
    if not leaves:  # PyTorch before 2.9: the legacy switches are the whole state
        return
    gpu = "tf32" if allow_tf32 else "ieee"
    for op in ("conv", "rnn"):  # "none" would defer to a parent that may say tf32
        _set_leaf("cuda", op, gpu)
    for op in ("matmul", "conv", "rnn"):  # the CPU (oneDNN) stays IEEE either way
        _set_leaf("mkldnn", op, "ieee")


def _restore(cudnn: bool | None, matmul: str | None, leaves: dict[tuple[str, str], str]) -> None:
    if cudnn is not None:
        torch.backends.cudnn.allow_tf32 = cudnn
    if matmul is not None:
        torch.set_float32_matmul_precision(matmul)
    for (backend, op), value in leaves.items():  # last: undoes the legacy setters' side effects
        _set_leaf(backend, op, value)


@contextlib.contextmanager
def float32_precision(allow_tf32: bool = False) -> Iterator[str]:
    """Run the block in IEEE float32 (``allow_tf32=False``) or with TF32 allowed; then restore.

    Yields the setting's name (:func:`precision_name`). The process's own settings come back on
    leaving the block, also when it raises (module docstring).

    Args:
        allow_tf32: Allow TF32 on the GPU's tensor cores (faster, ~1e-3 relative error).
    """
    with _quiet():
        leaves = _leaves()
        cudnn, matmul = _cudnn_flag(leaves), _matmul_precision(leaves)
    try:
        with _quiet():
            _apply(bool(allow_tf32), leaves)
        yield precision_name(allow_tf32)
    finally:
        with _quiet():
            _restore(cudnn, matmul, leaves)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No deprecation warnings from PyTorch's legacy switches (they are used on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def with_precision(job: F) -> F:
    """Run ``job`` under :func:`float32_precision` of its ``allow_tf32`` keyword (default False)."""

    @functools.wraps(job)
    def run(*args: Any, **kwargs: Any) -> Any:
        with float32_precision(bool(kwargs.get("allow_tf32", False))):
            return job(*args, **kwargs)

    return run  # type: ignore[return-value]
