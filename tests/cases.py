"""Shared test material: tiny models and data, exact dense Hessians (and GGNs and empirical
Fishers), a matrix as an operator, the devices to run on, a tiny CIFAR-10 in its published format,
and for the command line: one ``CliRunner``, the short option lists that keep a command fast, and
the check for the CLI's one error line.

A new estimator test takes a case from ``CASES`` (a model, inputs, targets and a loss name),
builds the exact Hessian with ``dense_reference`` and compares; a test of an estimator alone wraps
a matrix in ``DenseOp``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

from landscape_cli.hessian import Batch

# -- devices -------------------------------------------------------------------------------------

#: ``cpu`` always; ``cuda`` (marked ``cuda``: ``-m "not cuda"`` leaves it out) where there is one.
DEVICES = [
    "cpu",
    *([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else []),
]

# -- checkpoints ---------------------------------------------------------------------------------

#: What ``build_model`` needs for the digits data (8 × 8 grey images, 10 classes).
DIGITS = {"input_shape": (1, 8, 8), "num_classes": 10}


def digits_cnn(seed: int = 0) -> nn.Module:
    """The registry's ``cnn`` for digits, initialised from ``seed``, in eval mode."""
    from landscape_cli.models import build_model

    torch.manual_seed(seed)
    return build_model("cnn", **DIGITS).eval()


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold the same state-dict keys with bitwise-equal tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- tiny problems -------------------------------------------------------------------------------


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def cnn_bn() -> nn.Module:
    torch.manual_seed(1)
    m = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)
    ).double()
    with torch.no_grad():  # non-trivial running statistics, as after training
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
        m[1].weight.uniform_(0.5, 1.5)
    return m


class Quadratic(nn.Module):
    """Loss 0.5 θᵀAθ + bᵀθ with a chosen spectrum (the model returns θ; the loss applies A)."""

    def __init__(self, eigenvalues: list[float], seed: int = 0) -> None:
        super().__init__()
        n = len(eigenvalues)
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.register_buffer("A", q @ torch.diag(torch.tensor(eigenvalues).double()) @ q.T)
        self.theta = nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta.expand(x.shape[0], -1)


def quadratic_loss(model: Quadratic):
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = out[0]
        return 0.5 * t @ model.A @ t + t.sum()

    return loss


def data(shape, n=20, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(
        0, classes, (n,), generator=g
    )


def batches(x, y, batch_size):
    return [
        Batch(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)
    ]


def dense_reference(model: nn.Module, x, y, loss_fn) -> torch.Tensor:
    """The exact Hessian of the mean loss over all samples, by torch.func.hessian, eval mode."""
    model.eval()
    names = [k for k, p in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = dict(model.named_buffers())

    def f(flat):
        parts = torch.split(flat, sizes)
        params = {k: v.reshape(s) for k, v, s in zip(names, parts, shapes, strict=True)}
        return loss_fn(functional_call(model, (params, buffers), (x,)), y)

    return hessian(f)(flat0)


# -- the GGN and the empirical Fisher, built independently of the package's operators --------------


def _flat_fn(model: nn.Module):
    """(flat parameters, f(flat, inputs) -> outputs) over every parameter, in model order."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def f(flat, inputs):
        parts = torch.split(flat, sizes)
        params = {k: v.reshape(s) for k, v, s in zip(names, parts, shapes, strict=True)}
        return functional_call(model, params, (inputs,))

    return flat0, f


def dense_ggn(model: nn.Module, bs: list[Batch], loss_fn) -> torch.Tensor:
    """Σ_b (n_b/N) J_bᵀ (∂²L_b/∂z²) J_b: J by jacrev, the output Hessian by torch.func.hessian."""
    model.eval()
    flat0, f = _flat_fn(model)
    total = sum(len(b) for b in bs)
    G = torch.zeros(len(flat0), len(flat0), dtype=torch.float64)
    for b in bs:
        z = f(flat0, b.inputs)
        J = jacrev(f)(flat0, b.inputs).reshape(z.numel(), -1)
        Hz = hessian(lambda zz, b=b: loss_fn(zz, b.targets))(z).reshape(z.numel(), z.numel())
        G += len(b) / total * (J.T @ Hz @ J)
    return G


def _sample(inputs, i: int):
    if isinstance(inputs, dict):
        n = int(inputs["attention_mask"][i].sum())  # the sample alone, its padding removed
        return {k: v[i : i + 1, :n] for k, v in inputs.items()}
    return inputs[i : i + 1]


def dense_fisher(model: nn.Module, bs: list[Batch], loss_fn) -> torch.Tensor:
    """(1/N) Σ_n g_n g_nᵀ with g_n the gradient of sample n's loss, each sample run alone."""
    from torch.func import grad

    model.eval()
    flat0, f = _flat_fn(model)
    total = sum(len(b) for b in bs)
    F = torch.zeros(len(flat0), len(flat0), dtype=torch.float64)
    for b in bs:
        for i in range(len(b)):
            x, y = _sample(b.inputs, i), b.targets[i : i + 1]
            g = grad(lambda flat, x=x, y=y: loss_fn(f(flat, x), y))(flat0)
            F += torch.outer(g, g) / total
    return F


class DenseOp:
    """A matrix as an operator, for estimator-only tests. Like HessianOperator it computes in
    the matrix's own dtype, returns float64 and counts its products."""

    def __init__(self, H: torch.Tensor) -> None:
        self.H, self.n, self.device, self.dtype = H, H.shape[0], H.device, H.dtype
        self.hvp_count = 0

    def matmat(self, V):
        self.hvp_count += V.shape[1]
        return (self.H @ V.to(self.dtype)).double()

    def matvec(self, v):
        self.hvp_count += 1
        return (self.H @ v.to(self.dtype)).double()


#: name -> () -> (model, inputs, targets, loss name)
CASES = {
    "mlp-ce": lambda: (mlp(), *data((4,)), "ce"),
    "mlp-mse": lambda: (mlp(), *data((4,), seed=1), "mse"),
    "cnn-bn-eval-ce": lambda: (cnn_bn(), *data((1, 5, 5), n=13), "ce"),
}

# -- the command line ----------------------------------------------------------------------------

#: Runs a command in-process (``runner.invoke(app, [...])``); it keeps nothing between calls.
runner = CliRunner()

#: The options that keep any measuring command fast: 32 samples, one batch.
FAST = ["--samples", "32", "--batch-size", "32"]
#: ``FAST`` for ``hessian``: the top eigenvalue only, no trace, no density.
HFAST = [*FAST, "--top-k", "1", "--trace-probes", "0", "--density-probes", "0"]
#: ``FAST`` for a ``hessian`` that writes every part of ``/hessian`` (per-layer too).
FULL = [*FAST, "--top-k", "2", "--trace-probes", "4", "--density-probes", "2",
        "--lanczos-steps", "5", "--per-layer"]  # fmt: skip


def one_error_line(result) -> str:
    """A refused command: exit code 2, nothing on stdout, and exactly one line on stderr that
    starts with ``error:`` (never a traceback). Returns that line."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


# -- results as the readers return them ----------------------------------------------------------

#: The group attributes a ``/hessian`` takes from its report (the rest stay group attributes).
_REPORT_ATTRS = ("loss", "samples", "split", "curvature")


def hessian_result(
    eigenvalues=None,
    trace=None,
    *,
    stderr=None,
    ci95=None,
    density=None,
    per_layer=None,
    attrs=None,
):
    """A :class:`~landscape_cli.results.HessianResult` as ``read_hessian`` returns it.

    ``eigenvalues`` (the top-k), ``trace`` with ``stderr`` and ``ci95`` (NaN when not given),
    ``density`` (a dict of ``grid`` and ``density``, with ``nodes`` and ``weights`` when given),
    ``per_layer`` ({name: {lambda_max, lambda_max_residual, trace, trace_stderr, numel}}) and
    ``attrs`` (``loss``, ``samples``, ``split``, ``curvature`` go to the report, by default
    cross-entropy on 512 training samples; others such as ``engine`` stay group attributes).
    """
    import numpy as np

    from landscape_cli.hessian.types import (
        DensityResult,
        HessianReport,
        LanczosResult,
        LayerCurvature,
        TraceResult,
    )
    from landscape_cli.results import HessianResult

    attrs = dict(attrs or {})
    facts = {"loss": "ce", "samples": 512, "split": "train"}
    facts.update({k: attrs.pop(k) for k in _REPORT_ATTRS if k in attrs})
    top = None
    if eigenvalues is not None:
        k = len(eigenvalues)
        top = LanczosResult(
            eigenvalues=np.asarray(eigenvalues, dtype=np.float64), residuals=np.zeros(k),
            converged=np.ones(k, bool), lambda_min=float("nan"),
            lambda_min_residual=float("nan"), steps=k, hvp_count=k, tol=1e-4,
        )  # fmt: skip
    tr = None
    if trace is not None:
        nan = float("nan")
        tr = TraceResult(
            estimate=float(trace), stderr=nan if stderr is None else float(stderr),
            ci95=(nan, nan) if ci95 is None else tuple(ci95), samples=np.zeros(0), probes=0,
            method="hutchinson", hvp_count=0, converged=True, rtol=0.0,
        )  # fmt: skip
    den = None
    if density is not None:
        nodes = np.asarray(density.get("nodes", np.zeros((0, 0))))
        weights = np.asarray(density.get("weights", np.zeros_like(nodes)))
        den = DensityResult(
            grid=np.asarray(density["grid"]), density=np.asarray(density["density"]),
            nodes=nodes, weights=weights,
            sigma=0.005, lanczos_steps=int(np.shape(nodes)[-1]), probes=len(nodes), hvp_count=0,
        )  # fmt: skip
    layers = tuple(
        LayerCurvature(name=name, **{key: layer[key] for key in (
            "numel", "lambda_max", "lambda_max_residual", "trace", "trace_stderr")})
        for name, layer in (per_layer or {}).items()
    )  # fmt: skip
    report = HessianReport(
        top=top, trace=tr, density=den, per_layer=layers, batch_size=64, seed=0, device="cpu",
        dtype="float32", bn_mode="eval", hvp_count=0, seconds=0.0, num_params=0, **facts,
    )  # fmt: skip
    return HessianResult(report, attrs)


def scan_result(name, x, y, loss, accuracy, *, kind="random", attrs=None, trajectory=None):
    """A :class:`~landscape_cli.results.ScanResult` as ``read_scan`` returns it (``dim`` from
    ``y``, ``kind`` in its attributes)."""
    from landscape_cli.results import ScanResult

    attrs = {"dim": 1 if y is None else 2, "kind": kind, **(attrs or {})}
    return ScanResult(name, x, y, loss, accuracy, attrs, trajectory=trajectory)


# -- datasets in their published formats -----------------------------------------------------------

#: The CIFAR-10 class names, as its ``batches.meta`` holds them.
CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
CIFAR10_NAMES += [b"dog", b"frog", b"horse", b"ship", b"truck"]


def dump_py2(path: Path, obj: object) -> None:
    """Pickle ``obj`` as CIFAR's published files are: protocol 2, the newest a Python 2 pickle can
    be (bytes keys then read as Python 2 ``str`` keys)."""
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar10(root: Path, per_batch: int = 3, n_test: int = 4, seed: int = 0) -> dict:
    """Write a tiny CIFAR-10 in the published layout; return the data and labels per split."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    files = [(f"data_batch_{i}", "train", per_batch) for i in range(1, 6)]
    for file, split, n in [*files, ("test_batch", "test", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        dump_py2(
            folder / file,
            {
                b"batch_label": f"{file} of 5".encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            },
        )
        out[split][0].append(data)
        out[split][1].extend(labels)
    dump_py2(
        folder / "batches.meta",
        {b"num_cases_per_batch": per_batch, b"label_names": CIFAR10_NAMES, b"num_vis": 3072},
    )
    return {split: (np.concatenate(d), labels) for split, (d, labels) in out.items()}


class Float64Shapes(TorchDispatchMode):
    """Records the shape of every float64 tensor any operation creates while it is active.

    The memory tests of large-model code paths use it to show that no float64 tensor of the
    model's size (or wider than one column) is ever made.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                self.shapes.append(tuple(t.shape))
        return out
