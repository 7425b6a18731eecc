"""One prepared check of landscape on a GPU (issue 26), or its small CPU rehearsal (``--cpu``).

Run it through ``benchmarks/gpu_check.sh`` (which picks the Python environment); it prints one
table as it goes and, when ``$OUT`` is set, writes it to ``$OUT/gpu_check.txt`` and
``$OUT/gpu_check.json`` after every row, so a run cut short still leaves what it measured.
Exit status 1 when a check failed, else 0.

Sections, in order (each skipped, with the reason, when the time budget is spent):

1. **environment**: PyTorch, CUDA, cuDNN, the GPU, and this PyTorch's TF32 defaults.
2. **pytest -m cuda**: the test suite's CUDA cases (GPU only).
3. **CPU vs CUDA equality** on the reference digits CNN and a CIFAR ResNet-18 (width 64, 256
   samples; fixed Gaussian-mixture images in CIFAR's shape): one Hessian-vector product, the top-5
   eigenvalues (Lanczos, same seed), the Hutchinson trace (same seed, so the same probes), a 1-D
   filter-normalised scan (the same direction), and a DualAdam step (the gradient, then the step
   from the same gradient). All in float32 with TF32 off (:mod:`landscape_cli.precision`), as the
   commands run. The tolerance is 1e-6 relative (issue 26), or three times the float32 rounding
   of the CPU's own result (its distance to a float64 computation) where that is larger: two
   float32 computations that each sit within e of the exact value can differ by 2e. The top-5
   is certified instead: each eigenvalue pair must agree within the sum of the two runs'
   explicit residuals ‖Hy − θy‖, which bound each run's error (or 1e-6 relative). The same
   quantities with TF32 allowed are shown beside them (information: why TF32 is off).
4. **batched products**: the cost of one HVP and of ``matmat`` with 4, 8 and 16 columns (and
   a vectorised second backward), in gradients, with first-order graphs kept and rebuilt
   (``benchmarks/batched_products.py``), and what that says of ``CUDA_BLOCK``.
5. **landscape hessian** with its default options, end to end through the command line, on the
   full-width CIFAR ResNet-18 (11.2 M parameters, 1,024 samples of a CIFAR-10-format folder of
   random images): wall time, HVPs and peak GPU memory.
6. **language model**: the top eigenvalue of a GPT-2-small-shaped causal LM (12 layers, 768 wide,
   vocabulary 50,257; random weights) on a small text file, if this landscape reads causal LMs
   (it tries a folder built offline; "skipped: no causal-LM support" otherwise).

The run follows that list, except that the ResNet's equality comes last: its CPU side is the
slowest part, so its top-5 Lanczos run is sized to the time left (at most 40 steps; the table
says how many), after the default ``landscape hessian`` had what it needs.

``--cpu`` runs the same code on the CPU with small sizes in about a minute: the equality
checks then compare the CPU with itself (which exercises every path; they must agree exactly),
and what needs CUDA says why it is skipped.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import pickle
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import batched_products as bp  # noqa: E402

from landscape_cli.batches import to_device  # noqa: E402
from landscape_cli.losses import LOSSES  # noqa: E402
from landscape_cli.precision import float32_precision  # noqa: E402

ISSUE_RTOL = 1e-6


@dataclass(frozen=True)
class Sizes:
    """What one mode measures, and how long it may take."""

    budget_s: float | None  # the whole run, pytest included (None: no time-based skipping)
    digits_samples: int
    resnet_width: int
    resnet_samples: int
    top_steps: int
    trace_probes: int
    scan_points: int
    repeats: int
    blocks: tuple[int, ...]
    e2e_width: int
    e2e_samples: int
    e2e_options: tuple[str, ...]  # beyond the defaults (none on the GPU)
    lm: dict
    lm_samples: int


GPU = Sizes(
    budget_s=470,
    digits_samples=512,
    resnet_width=64,
    resnet_samples=256,
    top_steps=40,
    trace_probes=8,
    scan_points=11,
    repeats=3,
    blocks=(4, 8, 16),
    e2e_width=64,
    e2e_samples=1024,
    e2e_options=(),
    lm={"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 128},
    lm_samples=16,
)
CPU = Sizes(
    budget_s=None,
    digits_samples=128,
    resnet_width=4,
    resnet_samples=16,
    top_steps=20,
    trace_probes=8,
    scan_points=5,
    repeats=1,
    blocks=(4, 8, 16),
    e2e_width=4,
    e2e_samples=32,
    e2e_options=(
        "--top-k",
        "1",
        "--max-steps",
        "6",
        "--trace-probes",
        "4",
        "--density-probes",
        "2",
        "--lanczos-steps",
        "6",
    ),
    lm={"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 300, "n_positions": 64},
    lm_samples=8,
)


# -- the table -----------------------------------------------------------------------------------


class Table:
    """Rows of (section, check, value, reference, verdict), printed and saved as they come."""

    HEADER = ("section", "check", "value", "tolerance / reference", "verdict")

    def __init__(self, out: Path | None, title: str) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.out, self.title = out, title
        self.facts: dict = {}

    def add(self, section: str, check: str, value: str, ref: str = "", verdict: str = "info"):
        row = (section, check, value, ref, verdict)
        self.rows.append(row)
        print(" | ".join(row), flush=True)
        self.save()

    @property
    def failed(self) -> list[tuple[str, ...]]:
        return [r for r in self.rows if r[4].startswith("FAIL")]

    def render(self, most: int = 72) -> str:
        """The table as text, cells cut at ``most`` characters (the JSON keeps them whole)."""

        def cut(text: str) -> str:
            return text if len(text) <= most else text[: most - 1] + "…"

        rows = [tuple(cut(c) for c in r) for r in [self.HEADER, *self.rows]]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        line = "  ".join("-" * w for w in widths)
        text = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        return "\n".join([self.title, line, text[0], line, *text[1:]])

    def save(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.txt").write_text(self.render() + "\n", encoding="utf-8")
        rows = [dict(zip(self.HEADER, r, strict=True)) for r in self.rows]
        payload = {"title": self.title, "facts": self.facts, "rows": rows}
        (self.out / "gpu_check.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")


class Clock:
    """The run's time budget (None: unlimited, every section runs)."""

    def __init__(self, budget: float | None) -> None:
        self.t0, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        if self.budget is None:
            return math.inf
        return self.budget - (time.perf_counter() - self.t0)

    def cap(self, most: float, reserve: float = 0.0, least: float = 20.0) -> float:
        """Seconds a subprocess may take: ``most``, within what is left after ``reserve``."""
        return max(least, min(most, self.left() - reserve))

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def guarded(table: Table, section: str, clock: Clock, need: float, f: Callable[[], None]) -> None:
    """Run one section; an exception becomes a FAIL row, a spent budget a skipped row."""
    if clock.left() < need:
        table.add(section, "(section)", "", "", f"skipped: time budget ({clock.left():.0f} s left)")
        return
    try:
        f()
    except Exception as exc:  # the other sections still run
        tb = traceback.format_exc().strip().splitlines()
        print("\n".join(tb[-8:]), file=sys.stderr)
        table.add(section, "(section)", f"{type(exc).__name__}: {str(exc)[:120]}", "", "FAIL")


def rel(a, b) -> float:
    """‖b − a‖ / ‖a‖ (vectors) or |b − a| / |a| (numbers), in float64."""
    a = torch.as_tensor(np.asarray(a, dtype=np.float64))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64))
    scale = float(a.norm())
    return float((b - a).norm()) / scale if scale > 0 else float((b - a).norm())


def verdict(d: float, tol: float) -> str:
    return "ok" if d <= tol else "FAIL"


# -- 1. environment ------------------------------------------------------------------------------


def environment(table: Table, dev: torch.device) -> None:
    s = "environment"
    table.add(s, "python", f"{platform.python_version()} ({sys.executable})")
    table.add(s, "torch", f"{torch.__version__}, CUDA {torch.version.cuda or '-'}")
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        table.add(s, "GPU", f"{p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}")
        table.add(s, "cuDNN", str(torch.backends.cudnn.version()))
    # PyTorch's own defaults, which landscape's commands override (TF32 off)
    try:
        defaults = (
            f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
            f"matmul precision {torch.get_float32_matmul_precision()!r}"
        )
    except RuntimeError as exc:
        defaults = f"unreadable ({str(exc)[:60]})"
    table.add(s, "TF32 defaults of this PyTorch", defaults, "landscape: TF32 off unless asked")
    table.facts.update(torch=torch.__version__, cuda=torch.version.cuda, device=str(dev))


# -- 2. pytest -m cuda ---------------------------------------------------------------------------


def cuda_tests(table: Table, dev: torch.device, clock: Clock, python: str) -> None:
    s = "pytest -m cuda"
    if dev.type != "cuda":
        table.add(s, "tests marked cuda", "", "", "skipped: needs CUDA (no cuda case is generated)")
        return
    limit = clock.cap(150.0, reserve=300.0, least=30.0)
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests"]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        table.add(s, " ".join(cmd[2:]), f"timed out after {limit:.0f} s", "", "FAIL")
        return
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else res.stderr.strip()[-200:]
    for ln in lines:
        if ln.startswith(("FAILED", "ERROR")):
            table.add(s, "failure", ln[:160], "", "FAIL")
    table.add(
        s,
        " ".join(cmd[3:]),
        f"{last} ({time.perf_counter() - t0:.0f} s)",
        "exit 0",
        "ok" if res.returncode == 0 else f"FAIL (exit {res.returncode})",
    )


# -- 3. equality -----------------------------------------------------------------------------------


@dataclass
class Measured:
    """What one (device, dtype, TF32) configuration computed."""

    hvp: np.ndarray
    top: np.ndarray | None
    top_res: np.ndarray | None
    trace: float
    trace_samples: np.ndarray
    scan: np.ndarray
    grad: np.ndarray
    seconds: float


def dualadam_step(problem: bp.Problem, dev, dtype, grad: np.ndarray) -> np.ndarray:
    """DualAdam's first step Δθ from ``grad`` (lr 1e-2, α > 0): the optimizer's arithmetic."""
    from dualadam import DualAdam

    model = copy.deepcopy(problem.model).to(device=dev, dtype=dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    g = torch.as_tensor(grad).to(device=dev, dtype=dtype)
    for p, piece in zip(params, torch.split(g, [p.numel() for p in params]), strict=True):
        p.grad = piece.reshape(p.shape).clone()
    DualAdam(params, lr=1e-2).step()
    step = torch.cat([(p.detach() - s).reshape(-1) for p, s in zip(params, start, strict=True)])
    return step.double().cpu().numpy()


def measure(problem: bp.Problem, dev, dtype, allow_tf32, sizes: Sizes, shared) -> Measured:
    """Every equality quantity on one configuration (the model and batches are copied)."""
    from landscape_cli.hessian import HessianOperator, hutchinson_trace, lanczos_top
    from landscape_cli.scan.grid import PointEvaluator

    t0 = time.perf_counter()
    with float32_precision(allow_tf32):
        op = HessianOperator(
            copy.deepcopy(problem.model),
            problem.batches,
            device=dev,
            dtype=dtype,
            keep_gradient=True,  # compared between devices
        )
        v = shared["v"].to(dev)
        t_hvp = time.perf_counter()
        hvp = op.matvec(v).cpu().numpy()
        t_hvp = time.perf_counter() - t_hvp
        if shared.get("steps") is None:  # the reference run sizes the top-5 to the time left
            clock: Clock = shared["clock"]
            room = clock.cap(180.0, reserve=shared["reserve"], least=0.0) / max(t_hvp, 1e-9)
            shared["steps"] = int(min(sizes.top_steps, room - sizes.trace_probes - 8))
        top = res = None
        if shared["top"] and shared["steps"] >= 10:
            r = lanczos_top(
                op,
                5,
                tol=1e-4,
                max_steps=shared["steps"],
                generator=torch.Generator().manual_seed(0),
            )
            top, res = r.eigenvalues, r.residuals
        tr = hutchinson_trace(
            op, probes=sizes.trace_probes, rtol=0.0, generator=torch.Generator().manual_seed(1)
        )
        net = op.model  # on dev, in dtype
        batches = [to_device(b, dev, dtype) for b in problem.batches]
        ev = PointEvaluator(net, batches, shared["directions"], LOSSES["ce"], "eval")
        try:
            scan = np.array([ev((float(a),))[0] for a in shared["xs"]])
        finally:
            ev.restore()
        grad = op.gradient.cpu().numpy()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return Measured(hvp, top, res, tr.estimate, tr.samples, scan, grad, time.perf_counter() - t0)


def equality(
    table: Table, problem: bp.Problem, ref_dev, dev, sizes: Sizes, clock: Clock, reserve=10.0
) -> None:
    """CPU float32 (A) vs the device in float32 (B), TF32 on (T), float64 (R: the rounding)."""
    from landscape_cli.scan import axis, random_plan

    s = f"equality: {problem.name}"
    n = sum(p.numel() for p in problem.model.parameters() if p.requires_grad)
    gen = torch.Generator().manual_seed(2)
    xs = axis(-1.0, 1.0, sizes.scan_points)
    plan = random_plan(copy.deepcopy(problem.model), name="1d", x=xs, seed=0)
    shared = {
        "v": torch.randn(n, generator=gen, dtype=torch.float64),
        "directions": plan.directions,
        "xs": xs,
        "top": True,
        "steps": None,  # set by the reference run from the time its products take
        "clock": clock,
        "reserve": reserve,
    }
    same_device = dev.type == ref_dev.type
    A = measure(problem, ref_dev, torch.float32, False, sizes, shared)
    B = measure(problem, dev, torch.float32, False, sizes, shared)
    # TF32 changes nothing on the CPU: the rehearsal does not measure it twice
    T = B if same_device else measure(problem, dev, torch.float32, True, sizes, shared)
    R = measure(problem, dev, torch.float64, False, sizes, {**shared, "top": False})
    table.add(
        s,
        "setup",
        f"{n:,} parameters, {sum(len(b) for b in problem.batches)} samples",
        f"{ref_dev.type} vs {dev.type}; seconds A {A.seconds:.1f}, B {B.seconds:.1f}",
    )
    tf32_same = "same (no TF32 on the CPU)"

    def add(name: str, d: float, e: float, tf: float) -> None:
        tol = max(ISSUE_RTOL, 3 * e)
        table.add(
            s,
            name,
            f"{d:.1e} ({tf32_same if same_device else f'TF32 on: {tf:.1e}'})",
            f"≤ {tol:.1e} (float32 rounding {e:.1e})",
            verdict(d, tol),
        )

    add("HVP ‖Δ‖/‖Hv‖", rel(A.hvp, B.hvp), rel(A.hvp, R.hvp), rel(A.hvp, T.hvp))
    if A.top is None:
        table.add(s, "top-5", "", "", f"skipped: time budget ({shared['steps']} Lanczos steps)")
    else:
        top5(table, s, A, B, T, shared["steps"])
    add(
        f"trace (Hutchinson, {sizes.trace_probes} probes, same seed)",
        rel(A.trace, B.trace),
        rel(A.trace, R.trace),
        rel(A.trace, T.trace),
    )

    def worst(x: np.ndarray) -> float:
        return float(np.max(np.abs(x - A.scan) / np.abs(A.scan)))

    add(
        f"1-D scan losses ({sizes.scan_points} points) max rel.",
        worst(B.scan),
        worst(R.scan),
        worst(T.scan),
    )
    add("gradient ‖Δ‖/‖g‖", rel(A.grad, B.grad), rel(A.grad, R.grad), rel(A.grad, T.grad))
    with float32_precision(False):  # the step from the CPU's gradient on both devices
        step_a = dualadam_step(problem, ref_dev, torch.float32, A.grad)
        step_b = dualadam_step(problem, dev, torch.float32, A.grad)
    d = rel(step_a, step_b)
    table.add(
        s,
        "DualAdam step from the same gradient ‖Δ‖/‖step‖",
        f"{d:.1e}",
        f"≤ {ISSUE_RTOL:.0e} (elementwise IEEE arithmetic)",
        verdict(d, ISSUE_RTOL),
    )


def top5(table: Table, s: str, A: Measured, B: Measured, T: Measured, steps: int) -> None:
    """Certified agreement: |λB − λA| ≤ max(1e-6·|λA|, res_A + res_B) for each of the top 5."""
    diff = np.abs(B.top - A.top)
    bound = np.maximum(ISSUE_RTOL * np.abs(A.top), A.top_res + B.top_res)
    tdiff = np.abs(T.top - A.top)
    tbound = np.maximum(ISSUE_RTOL * np.abs(A.top), A.top_res + T.top_res)
    table.add(
        s,
        f"top-5 max |Δλ|/|λ| (Lanczos ≤ {steps} steps, same seed)",
        f"{np.max(diff / np.abs(A.top)):.1e} (TF32 on: {np.max(tdiff / np.abs(A.top)):.1e}, "
        f"{'within' if np.all(tdiff <= tbound) else 'OUTSIDE'} its residuals)",
        f"|Δλ| ≤ res_A + res_B (max ratio {np.max(diff / bound):.2f}); λ1 {A.top[0]:.6g}",
        "ok" if np.all(diff <= bound) else "FAIL",
    )


# -- 4. batched products -------------------------------------------------------------------------


def batched(table: Table, problems: list[bp.Problem], dev, sizes: Sizes) -> None:
    from landscape_cli.hessian.batching import CUDA_BLOCK, default_block

    s = "batched products"
    best: dict[int, float] = {}
    for problem in problems:
        for cache in (True, False):
            r = bp.measure(
                problem, dev, cache_graphs=cache, repeats=sizes.repeats, blocks=sizes.blocks
            )
            for cells in bp.rows(problem, r, sizes.blocks):
                name, graphs, cols, ms, xgrad, speed = cells
                table.add(
                    s,
                    f"{name}, graphs {graphs}, {cols}",
                    f"{xgrad} x gradient",
                    f"{ms} ms/column, {speed}x vs singles",
                )
                if "matmat" in cols and name == problems[-1].name:
                    b = int(cols.split()[0])
                    best[b] = max(best.get(b, 0.0), float(speed))
            for k, val in r.items():
                if k.endswith("_error") or k == "vmap_check":
                    table.add(s, f"{problem.name}, graphs {r['cached']}: {k}", str(val))
    if best:
        top = max(best, key=best.get)
        rule = default_block(dev)
        table.add(
            s,
            f"block rule on {dev.type} (CUDA_BLOCK = {CUDA_BLOCK})",
            f"fastest matmat per column: {top} columns ({best[top]:.2f}x vs singles)",
            f"the rule uses {rule}",
            "info"
            if dev.type != "cuda"
            else (
                "ok"
                if best.get(rule, 0) >= 0.9 * best[top]
                else f"info: consider CUDA_BLOCK = {top}"
            ),
        )


# -- 5. landscape hessian end to end -------------------------------------------------------------

_WRAPPER = (
    "import sys, torch\n"
    "from landscape_cli.commands import main\n"
    "sys.argv = ['landscape', *sys.argv[1:]]\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    if torch.cuda.is_available():\n"
    "        sys.stderr.write(f'\\nPEAK_CUDA_BYTES {torch.cuda.max_memory_allocated()}\\n')\n"
)


def run_cli(
    python: str, args: list[str], timeout: float
) -> tuple[int, dict | None, str, float, int | None]:
    """``landscape ARGS --json`` in a fresh process: (exit, JSON, stderr, seconds, peak bytes).

    Past ``timeout`` the process gets Ctrl-C (SIGINT, exit 130: ``hessian`` then saves what it
    finished, marked partial), and is killed if it has not ended 60 s later.
    """
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [python, "-c", _WRAPPER, *args, "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # a background job of a non-interactive shell ignores SIGINT: give the child the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    peak = re.search(r"PEAK_CUDA_BYTES (\d+)", stderr)
    out = None
    if proc.returncode == 0:
        out = json.loads(stdout.strip().splitlines()[-1])
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    return (
        proc.returncode,
        out,
        errors[0] if errors else stderr[-300:],
        seconds,
        (int(peak.group(1)) if peak else None),
    )


def write_cifar10(root: Path, per_batch: int, seed: int = 0) -> None:
    """A CIFAR-10 folder in the published python format, of random images and labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, n in [*[(f"data_batch_{i}", per_batch) for i in range(1, 6)], ("test_batch", 64)]:
        record = {
            b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(record, protocol=2))
    names = [f"class {i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))


def end_to_end(table: Table, python: str, dev, sizes: Sizes, clock: Clock, tmp: Path) -> None:
    from landscape_cli.models import build_model

    s = "landscape hessian (defaults)" if not sizes.e2e_options else "landscape hessian"
    write_cifar10(tmp / "cifar", per_batch=math.ceil(sizes.e2e_samples / 5))
    torch.manual_seed(0)
    model = build_model("resnet18", input_shape=(3, 32, 32), num_classes=10, width=sizes.e2e_width)
    ckpt = tmp / "resnet18.pt"
    torch.save(model.state_dict(), ckpt)
    n = sum(p.numel() for p in model.parameters())
    args = [
        "hessian",
        str(ckpt),
        "--model",
        "resnet18",
        "--model-option",
        f"width={sizes.e2e_width}",
        "--dataset",
        "cifar10",
        "--data-root",
        str(tmp / "cifar"),
        "--samples",
        str(sizes.e2e_samples),
        "--device",
        dev.type,
        "--out",
        str(tmp / "resnet18.h5"),
        *sizes.e2e_options,
    ]
    table.facts["e2e_command"] = "landscape " + " ".join(args)
    limit = clock.cap(400.0, reserve=110.0, least=60.0)
    what = f"CIFAR ResNet-18 width {sizes.e2e_width} ({n:,} params), {sizes.e2e_samples} samples"
    table.add(
        s, "command", "landscape " + " ".join(a if "/" not in a else Path(a).name for a in args)
    )
    code, out, err, seconds, peak = run_cli(python, args, limit)
    peak_text = f"{peak / 2**30:.2f} GiB peak GPU memory" if peak else "(no GPU)"
    if code == 130:  # stopped at the time limit: what it finished is in the file, marked partial
        partial(table, s, what, tmp / "resnet18.h5", seconds, peak_text, limit)
        return
    if code != 0 or out is None:
        table.add(s, what, f"exit {code}: {err}", "", "FAIL")
        return
    table.add(
        s,
        what,
        f"{seconds:.1f} s wall, {out['hvp_count']} HVPs, {peak_text}",
        f"{out['seconds']:.1f} s computing on {out['device']}",
    )
    eig = ", ".join(f"{v:.5g}" for v in out["eigenvalues"])
    res = max(out["residuals"]) if out["residuals"] else float("nan")
    table.add(s, "top eigenvalues", eig, f"max residual {res:.1e}, {out['float32_precision']}")
    table.add(
        s,
        "trace",
        f"{out['trace']:.5g} ± {out['trace_stderr']:.2g}",
        f"{out['trace_method']}, {out['trace_probes']} probes; density {out['density_probes']} "
        "probes",
    )
    table.facts["e2e"] = {"seconds": seconds, "hvp_count": out["hvp_count"], "peak_bytes": peak}


def partial(table: Table, s: str, what: str, path: Path, seconds, peak_text, limit) -> None:
    """The row of a run stopped at its time limit, from the partial ``/hessian`` it saved."""
    from landscape_cli.results import read_hessian

    if not path.exists():
        table.add(s, what, f"stopped at {limit:.0f} s before finishing a phase", "", "FAIL")
        return
    h = read_hessian(path)
    attrs = h["attrs"]
    done = [k for k in ("eigenvalues", "trace", "density") if h.get(k) is not None]
    table.add(
        s,
        what,
        f"stopped at the {limit:.0f} s limit: {attrs.get('hvp_count')} HVPs in "
        f"{attrs.get('seconds', float('nan')):.1f} s, {peak_text}",
        f"partial result: {', '.join(done) or 'nothing'} finished",
        "info: partial (time budget)",
    )
    if h.get("eigenvalues") is not None:
        eig = ", ".join(f"{v:.5g}" for v in h["eigenvalues"])
        table.add(s, "top eigenvalues", eig, f"max residual {max(h['residuals']):.1e}")


# -- 6. language model ---------------------------------------------------------------------------


def lm_folder(folder: Path, shape: dict, corpus: list[str], seed: int = 0) -> None:
    """A GPT2LMHeadModel of ``shape`` (random weights) and a word-level tokenizer, offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[EOS]"])
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    config = GPT2Config(
        **shape,
        n_inner=None,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)  # safetensors, the default since transformers 4.35
    fast.save_pretrained(folder)


def language_model(table: Table, python: str, dev, sizes: Sizes, clock: Clock, tmp: Path) -> None:
    s = "language model"
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)]
    corpus = [" ".join(rng.choice(words, size=24)) for _ in range(max(32, sizes.lm_samples))]
    folder = tmp / "gpt2"
    try:
        lm_folder(folder, sizes.lm, corpus)
    except ImportError as exc:
        table.add(s, "GPT-2-shaped top-1", "", "", f"skipped: {exc}")
        return
    data = tmp / "corpus.csv"
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerows([[line] for line in corpus])
    args = [
        "hessian",
        str(folder),
        "--dataset",
        f"text:{data}",
        "--samples",
        str(sizes.lm_samples),
        "--batch-size",
        "8",
        "--top-k",
        "1",
        "--trace-probes",
        "0",
        "--density-probes",
        "0",
        "--device",
        dev.type,
        "--out",
        str(tmp / "gpt2.h5"),
    ]
    shape = f"GPT-2 {sizes.lm['n_layer']}x{sizes.lm['n_embd']}, vocab {sizes.lm['vocab_size']}"
    limit = clock.cap(60.0, reserve=60.0, least=30.0)
    code, out, err, seconds, peak = run_cli(python, args, limit)
    if code == 130:
        table.add(s, f"{shape} top-1", f"stopped at the {limit:.0f} s limit", "", "FAIL (time)")
        return
    if code == 2 and "architecture" in err and "GPT2LMHeadModel" in err:
        table.add(s, f"{shape} top-1", "", err[:100], "skipped: no causal-LM support")
        return
    if code != 0 or out is None:
        table.add(s, f"{shape} top-1", f"exit {code}: {err[:150]}", "", "FAIL")
        return
    peak_text = f", {peak / 2**30:.2f} GiB peak GPU memory" if peak else ""
    table.add(
        s,
        f"{shape} top-1 ({out['num_params']:,} params)",
        f"λ1 {out['eigenvalues'][0]:.5g} (residual {out['residuals'][0]:.1e})",
        f"{seconds:.1f} s wall, {out['hvp_count']} HVPs{peak_text}",
    )


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="the small CPU rehearsal")
    ap.add_argument("--python", default=sys.executable, help="the Python of the subprocesses")
    args = ap.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --cpu for the CPU rehearsal", file=sys.stderr)
        return 2
    sizes = CPU if args.cpu else GPU
    dev = torch.device("cpu" if args.cpu else "cuda")
    ref = torch.device("cpu")
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    clock = Clock(sizes.budget_s)
    mode = "CPU rehearsal (--cpu)" if args.cpu else "GPU"
    table = Table(out, f"landscape GPU check, {mode}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(table.title, flush=True)

    timed = clock.budget is not None  # sections are skipped when the time left is below need
    guarded(table, "environment", clock, 0, lambda: environment(table, dev))
    guarded(
        table,
        "pytest -m cuda",
        clock,
        200 if timed else 0,
        lambda: cuda_tests(table, dev, clock, args.python),
    )
    digits = bp.digits_problem(sizes.digits_samples)
    resnet = bp.resnet_problem(sizes.resnet_width, sizes.resnet_samples)
    guarded(
        table,
        f"equality: {digits.name}",
        clock,
        20 if timed else 0,
        lambda: equality(table, digits, ref, dev, sizes, clock, reserve=300.0),
    )
    guarded(
        table,
        "batched products",
        clock,
        30 if timed else 0,
        lambda: batched(table, [digits, resnet], dev, sizes),
    )
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        # The default `landscape hessian` gets all but 110 s (the last two sections' share).
        guarded(
            table,
            "landscape hessian",
            clock,
            60 if timed else 0,
            lambda: end_to_end(table, args.python, dev, sizes, clock, Path(tmp)),
        )
        guarded(
            table,
            "language model",
            clock,
            30 if timed else 0,
            lambda: language_model(table, args.python, dev, sizes, clock, Path(tmp)),
        )
    # Last: its CPU side is the slowest part, and its top-5 is sized to the time left.
    guarded(
        table,
        f"equality: {resnet.name}",
        clock,
        30 if timed else 0,
        lambda: equality(table, resnet, ref, dev, sizes, clock, reserve=10.0),
    )
    table.facts["seconds"] = round(clock.elapsed(), 1)
    within = not timed or clock.elapsed() <= clock.budget
    table.add(
        "total",
        "wall time",
        f"{clock.elapsed():.0f} s",
        f"budget {clock.budget:.0f} s" if timed else "no budget (--cpu)",
        "ok" if within else "FAIL (over budget)",
    )
    print()
    print(table.render())
    failed = table.failed
    print(f"\n{len(failed)} failed" if failed else "\nall checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
