"""λmax, top-5 and trace of a CIFAR ResNet-18's Hessian: landscape against PyHessian 0.1.

Usage: python benchmarks/hessian_vs_pyhessian.py [--quick] [--threads 2] [--repeats 7]

One run, same weights and same samples for both libraries: a CIFAR ResNet-18 (width 8, ~176 k
parameters) trained for 30 Adam steps on 64 samples of a random 10-class Gaussian mixture of
CIFAR-shaped images (class mean + unit noise), then evaluated in eval mode on held-out samples
of the same mixture, cross-entropy loss:

* one batch of 128 samples (PyHessian's ``data=`` mode, which keeps the first-order graph);
* 4 batches of 64 = 256 samples, the first 128 being the one batch's (PyHessian's
  ``dataloader=`` mode, which rebuilds the graph for every product).

Each library runs at its default tolerance and at the other's accuracy (landscape Lanczos at
tol 1e-6 and 1e-3; PyHessian power iteration at tol 1e-3 and, on the one batch only, 1e-7).

References: float64 Lanczos (tol 1e-10, at most 300 steps) for the eigenvalues; for the trace,
tr(T_m) of a long float32 Lanczos run plus many projected Rademacher probes (its standard error
is printed). HVP counts are full-sample-set products of one vector; PyHessian's are counted by
wrapping its ``hessian_vector_product`` (one batch) and ``dataloader_hv_product`` (all batches).
The times of the HVP/gradient table are medians of interleaved repeats. Prints a table, writes
nothing. ``--quick`` (a smoke test, ~1-2 min) uses 32 samples (one batch; 2 x 16) and a float64
reference to tol 1e-8. Two threads on two cores that another job is also using run many times
slower than one; the load average is printed with the results for that reason.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyhessian
import torch
from torch import nn

from landscape_cli.hessian import Batch, HessianOperator, deflated_trace, hutchinson_trace
from landscape_cli.hessian.lanczos import KrylovBasis, lanczos_run
from landscape_cli.models import build_model

# The package's __init__ rebinds `pyhessian.hessian` to the class; this is the module.
ph = importlib.import_module("pyhessian.hessian")


@dataclass(frozen=True)
class Config:
    width: int
    train_samples: int
    train_steps: int
    one_batch: int
    multi_batches: int
    multi_batch_size: int
    probes: int  # cap on our trace probes (and PyHessian's default maxIter is 100)
    ref_tol: float
    ref_max_steps: int
    ref_trace_steps: tuple[int, int]  # Lanczos steps of the trace reference (one, multi)
    ref_trace_probes: tuple[int, int]
    repeats: int


FULL = Config(8, 64, 30, 128, 4, 64, 100, 1e-10, 300, (120, 60), (200, 100), 7)
QUICK = Config(8, 32, 20, 32, 2, 16, 30, 1e-8, 100, (40, 30), (40, 30), 3)


# -- setup ------------------------------------------------------------------------------------


def make_data(n: int, means: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    y = torch.randint(0, 10, (n,), generator=gen)
    x = torch.randn(n, 3, 32, 32, generator=gen) + means[y]
    return x, y


def make_model(cfg: Config) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """The trained-ish model, the evaluation samples (inputs, targets) and a description."""
    torch.manual_seed(0)
    model = build_model("resnet18", input_shape=(3, 32, 32), num_classes=10, width=cfg.width)
    gen = torch.Generator().manual_seed(1)
    means = 0.5 * torch.randn(10, 3, 32, 32, generator=gen)
    xt, yt = make_data(cfg.train_samples, means, gen)
    n_eval = max(cfg.one_batch, cfg.multi_batches * cfg.multi_batch_size)
    x, y = make_data(n_eval, means, gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(cfg.train_steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        train_loss = nn.functional.cross_entropy(model(xt), yt).item()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y).item()
        acc = (out.argmax(1) == y).float().mean().item()
    desc = (
        f"weights: {cfg.train_steps} Adam steps (lr 1e-2) on {cfg.train_samples} samples "
        f"(train loss {train_loss:.3f}); held-out loss {loss:.3f}, accuracy {acc:.2f}"
    )
    return model, x, y, desc


# -- measuring --------------------------------------------------------------------------------


def sci(x: float) -> str:
    """1e-06 -> 1e-6."""
    return f"{x:.0e}".replace("e-0", "e-")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


class Counter:
    """Counts calls of a function it wraps."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@contextlib.contextmanager
def counted_pyhessian(h: ph.hessian) -> Iterator[Counter]:
    """Counts PyHessian's full-sample-set HVPs while the block runs."""
    if h.full_dataset:
        counter = Counter(h.dataloader_hv_product)
        h.dataloader_hv_product = counter  # instance attribute shadows the method
        try:
            yield counter
        finally:
            del h.dataloader_hv_product
    else:
        counter = Counter(ph.hessian_vector_product)
        ph.hessian_vector_product = counter
        try:
            yield counter
        finally:
            ph.hessian_vector_product = counter.fn


def ritz_vector(basis: KrylovBasis, i: int = 0) -> torch.Tensor:
    """The i-th reported Ritz vector in float64 (the library's ritz_vectors returns float32)."""
    y = torch.as_tensor(basis.ritz[:, i], dtype=torch.float64) @ basis.Q
    return y / y.norm()


def true_residual(op64: HessianOperator, y: torch.Tensor, theta: float) -> float:
    """‖Hy − θy‖ / |θ| with the float64 operator (y unit)."""
    return float((op64.matvec(y) - theta * y).norm()) / abs(theta)


def flat(vs: list[torch.Tensor]) -> torch.Tensor:
    v = torch.cat([t.detach().reshape(-1) for t in vs]).double()
    return v / v.norm()


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


@dataclass
class Row:
    quantity: str
    method: str
    hvps: float
    seconds: float
    error: str
    note: str = ""
    ratio: bool = False


def ratio_row(label: str, ours: tuple[int, float], theirs: tuple[int, float]) -> Row:
    return Row("", label, ours[0] / theirs[0], ours[1] / theirs[1], "", ratio=True)


def fmt_rows(rows: list[Row]) -> list[str]:
    lines = [f"{'':<7} {'method':<46} {'HVPs':>6} {'seconds':>8} {'rel.err':>9}  notes"]
    for r in rows:
        hv = f"{r.hvps:.2f}" if r.ratio else f"{r.hvps:.0f}"
        lines.append(
            f"{r.quantity:<7} {r.method:<46} {hv:>6} {r.seconds:>8.2f} {r.error:>9}  {r.note}"
        )
    return lines


def run_case(
    name: str,
    model: nn.Module,
    batches: list[Batch],
    cfg: Config,
    idx: int,
    summary: list[dict],
) -> None:
    criterion = nn.CrossEntropyLoss()
    single = len(batches) == 1

    def p(line: str) -> None:
        print(line, flush=True)

    p("")
    p(f"== {name} ==")

    # Reference eigenvalues: float64 Lanczos.
    (op64, t_op64) = timed(
        lambda: HessianOperator(
            copy.deepcopy(model), batches, dtype=torch.float64, cache_graphs=True
        )
    )
    (ref, _), t_ref = timed(
        lambda: lanczos_run(
            op64,
            5,
            tol=cfg.ref_tol,
            max_steps=cfg.ref_max_steps,
            generator=torch.Generator().manual_seed(0),
            explicit_residuals=False,
        )
    )
    lam = ref.eigenvalues
    p(
        f"reference eigenvalues: float64 Lanczos k=5 tol {sci(cfg.ref_tol)}: {ref.steps} HVPs, "
        f"{t_ref:.1f} s (+{t_op64:.1f} s setup), max rel. residual "
        f"{float(np.max(ref.residuals / np.abs(lam))):.1e}"
    )
    p(
        "  λ1..5 = "
        + ", ".join(f"{v:.6g}" for v in lam)
        + f";  λmin of that Krylov space {ref.lambda_min:.4g}"
    )

    # Our operator (float32, cached graphs: the default on this size).
    op, t_op = timed(lambda: HessianOperator(copy.deepcopy(model), batches, cache_graphs=True))
    setup_batch_hvps = op.batch_hvps

    # Reference trace: tr(T_m) of a long Lanczos run + projected probes (float32 products).
    steps, probes = cfg.ref_trace_steps[idx], cfg.ref_trace_probes[idx]
    (_, tb), t_tb = timed(
        lambda: lanczos_run(
            op,
            steps,
            tol=0.0,
            max_steps=steps,
            generator=torch.Generator().manual_seed(101),
            explicit_residuals=False,
        )
    )
    tref, t_tr = timed(
        lambda: deflated_trace(
            op,
            tb,
            probes=probes,
            rtol=0.0,
            min_probes=probes,
            generator=torch.Generator().manual_seed(102),
            adaptive=False,
        )
    )
    tr_ref, tr_se = tref.estimate, tref.stderr
    p(
        f"reference trace: tr(T_{steps}) + {probes} projected Rademacher probes, float32 "
        f"products: {tr_ref:.6g} ± {tr_se:.3g} (stderr, {100 * tr_se / tr_ref:.2f} %), "
        f"{t_tb + t_tr:.1f} s"
    )
    op.hvp_count = 0

    # PyHessian.
    torch.manual_seed(0)
    pmodel = copy.deepcopy(model)
    if single:
        b = batches[0]
        h, t_h = timed(
            lambda: ph.hessian(pmodel, criterion, data=(b.inputs, b.targets), cuda=False)
        )
    else:
        loader = [(b.inputs, b.targets) for b in batches]
        h, t_h = timed(lambda: ph.hessian(pmodel, criterion, dataloader=loader, cuda=False))
    p(
        f"setup (not counted below): landscape operator {t_op:.2f} s ({setup_batch_hvps} "
        f"per-batch HVPs incl. the determinism check), PyHessian constructor {t_h:.2f} s"
    )

    rows: list[Row] = []

    # λmax: each library at its own default-like tolerance, then at the other's accuracy
    # (PyHessian at tol 1e-7 on the one-batch case only: dataloader products are slow).
    ph_tols = (1e-3, 1e-7) if single else (1e-3,)
    ph1: dict[float, tuple[int, float]] = {}
    for tol in ph_tols:
        torch.manual_seed(0)
        with counted_pyhessian(h) as c:
            (ev, evec), t = timed(lambda tol=tol: h.eigenvalues(maxIter=100, tol=tol, top_n=1))
        ph1[tol] = (c.calls, t)
        res = true_residual(op64, flat(evec[0]), ev[0])
        rows.append(
            Row(
                "λmax",
                f"PyHessian power iteration, tol {sci(tol)}",
                c.calls,
                t,
                f"{rel(ev[0], lam[0]):.1e}",
                f"true residual {res:.1e}",
            )
        )
    ours1: dict[float, tuple[int, float]] = {}
    for tol in (1e-6, 1e-3):
        (r1, b1), t = timed(
            lambda tol=tol: lanczos_run(
                op,
                1,
                tol=tol,
                max_steps=300,
                generator=torch.Generator().manual_seed(0),
                explicit_residuals=False,
            )
        )
        res = true_residual(op64, ritz_vector(b1), r1.eigenvalues[0])
        est = float(r1.residuals[0] / abs(r1.eigenvalues[0]))
        ours1[tol] = (r1.hvp_count, t)
        rows.append(
            Row(
                "λmax",
                f"landscape Lanczos k=1, tol {sci(tol)}",
                r1.hvp_count,
                t,
                f"{rel(r1.eigenvalues[0], lam[0]):.1e}",
                f"true residual {res:.1e} (Lanczos estimate {est:.0e})",
            )
        )
        if tol == 1e-6:
            summary[idx]["lmax"] = (r1.hvp_count, ph1[1e-3][0], res)
    for a, b in [(1e-6, 1e-3), (1e-3, 1e-3), (1e-6, 1e-7)]:
        if b in ph1:
            rows.append(
                ratio_row(f"ratio landscape {sci(a)} / PyHessian {sci(b)}", ours1[a], ph1[b])
            )

    # Top-5.
    ph5: dict[float, tuple[int, float]] = {}
    for tol in ph_tols:
        torch.manual_seed(0)
        with counted_pyhessian(h) as c:
            (ev5, _), t = timed(lambda tol=tol: h.eigenvalues(maxIter=100, tol=tol, top_n=5))
        ph5[tol] = (c.calls, t)
        ev5 = np.array(ev5, dtype=np.float64)
        sorted_ok = bool(np.all(np.diff(ev5) <= 0))
        wrong_sign = int(np.sum(np.sign(ev5) != np.sign(lam)))
        err_as_returned = float(np.max(np.abs(ev5 - lam) / np.abs(lam)))
        err_sorted = float(np.max(np.abs(np.sort(ev5)[::-1] - lam) / np.abs(lam)))
        rows.append(
            Row(
                "top-5",
                f"PyHessian top_n=5, tol {sci(tol)}",
                c.calls,
                t,
                f"{err_as_returned:.1e}",
                f"sorted: {'yes' if sorted_ok else 'no'}, wrong signs: {wrong_sign}, "
                f"max rel.err after sorting {err_sorted:.1e}",
            )
        )
    ours5: dict[float, tuple[int, float]] = {}
    b5 = None
    for tol in (1e-6, 1e-3):
        (r5, basis), t = timed(
            lambda tol=tol: lanczos_run(
                op,
                5,
                tol=tol,
                max_steps=300,
                generator=torch.Generator().manual_seed(0),
                explicit_residuals=False,
            )
        )
        err5 = float(np.max(np.abs(r5.eigenvalues - lam) / np.abs(lam)))
        est5 = float(np.max(r5.residuals / np.abs(r5.eigenvalues)))
        ours5[tol] = (r5.hvp_count, t)
        rows.append(
            Row(
                "top-5",
                f"landscape Lanczos k=5, tol {sci(tol)}",
                r5.hvp_count,
                t,
                f"{err5:.1e}",
                f"max Lanczos residual estimate {est5:.0e}",
            )
        )
        if tol == 1e-6:
            b5, r5_steps = basis, r5.hvp_count
            summary[idx]["top5"] = (r5.hvp_count, ph5[1e-3][0])
    for a, b in [(1e-6, 1e-3), (1e-3, 1e-3), (1e-6, 1e-7)]:
        if b in ph5:
            rows.append(
                ratio_row(f"ratio landscape {sci(a)} / PyHessian {sci(b)}", ours5[a], ph5[b])
            )
    assert b5 is not None

    # Trace.
    def trace_note(est: float, se: float, n: int, extra: str = "") -> str:
        z = abs(est - tr_ref) / math.sqrt(se**2 + tr_se**2) if math.isfinite(se) else math.nan
        return f"{est:.6g} ± {se:.3g} ({100 * se / abs(est):.1f} %), |err|/σ {z:.1f}{extra}"

    torch.manual_seed(0)
    with counted_pyhessian(h) as c:
        samples, t = timed(lambda: h.trace(maxIter=100, tol=1e-3))
    s = np.array(samples, dtype=np.float64)
    se = float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else math.inf
    rows.append(
        Row(
            "trace",
            "PyHessian Hutchinson, tol 1e-3",
            c.calls,
            t,
            f"{rel(float(s.mean()), tr_ref):.1e}",
            trace_note(float(s.mean()), se, len(s)),
        )
    )
    ph_tr_n, ph_tr_t = c.calls, t
    hut, t_hut = timed(
        lambda: hutchinson_trace(
            op, probes=cfg.probes, rtol=1e-2, generator=torch.Generator().manual_seed(7)
        )
    )
    rows.append(
        Row(
            "trace",
            f"landscape Hutchinson, rtol 1e-2 (≤{cfg.probes})",
            hut.hvp_count,
            t_hut,
            f"{rel(hut.estimate, tr_ref):.1e}",
            trace_note(hut.estimate, hut.stderr, hut.probes, "" if hut.converged else ", cap hit"),
        )
    )
    dft, t_dft = timed(
        lambda: deflated_trace(
            op, b5, probes=cfg.probes, rtol=1e-2, generator=torch.Generator().manual_seed(8)
        )
    )
    rows.append(
        Row(
            "trace",
            f"landscape deflated/adaptive, rtol 1e-2 (≤{cfg.probes})",
            dft.hvp_count,
            t_dft,
            f"{rel(dft.estimate, tr_ref):.1e}",
            trace_note(
                dft.estimate,
                dft.stderr,
                dft.probes,
                f", picked {dft.method}, + the top-5 run's {r5_steps}-vector basis"
                + ("" if dft.converged else ", cap hit"),
            ),
        )
    )
    rows.append(ratio_row("ratio deflated / PyHessian", (dft.hvp_count, t_dft), (ph_tr_n, ph_tr_t)))
    p("")
    for line in fmt_rows(rows):
        p(line)

    # Trace at equal error.
    var_h = float(np.var(hut.samples, ddof=1))
    var_d = float(np.var(dft.samples, ddof=1))
    n_h = var_h / dft.stderr**2
    ratio = n_h / dft.hvp_count
    ratio_all = n_h / (dft.hvp_count + r5_steps)
    p("")
    p(
        f"trace at equal error: per-probe variance Hutchinson {var_h:.3g}, "
        f"{dft.method} {var_d:.3g} ({var_h / var_d:.1f}x smaller);"
    )
    p(
        f"  Hutchinson needs {var_h:.3g} / {dft.stderr:.3g}² = {n_h:.0f} HVPs for the stderr "
        f"the deflated estimate reached with {dft.hvp_count}: {ratio:.1f}x fewer "
        f"({ratio_all:.1f}x counting the {r5_steps} Lanczos HVPs as well)"
    )
    summary[idx]["trace"] = (ratio, ratio_all)

    # HVP / gradient cost.
    op_nc = HessianOperator(copy.deepcopy(model), batches, cache_graphs=False)
    gmodel = copy.deepcopy(model).eval()
    gparams = [q for q in gmodel.parameters() if q.requires_grad]

    def gradient() -> None:
        for b in batches:
            loss = criterion(gmodel(b.inputs), b.targets)
            torch.autograd.grad(loss, gparams)

    v = torch.randn(op.n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pv = [q.float() for q in torch.split(v, op.sizes)]
    pv = [q.reshape(s) for q, s in zip(pv, op.shapes, strict=True)]
    if single:

        def ph_hvp() -> None:
            ph.hessian_vector_product(h.gradsH, h.params, pv)

    else:

        def ph_hvp() -> None:
            h.dataloader_hv_product(pv)

    funcs = {
        "gradient (forward + backward of the mean loss)": gradient,
        "landscape HVP, cache_graphs=True": lambda: op.matvec(v),
        "landscape HVP, cache_graphs=False": lambda: op_nc.matvec(v),
        f"PyHessian HVP ({'kept graph' if single else 'dataloader, rebuilt per batch'})": ph_hvp,
    }
    for f in funcs.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in funcs}
    for _ in range(cfg.repeats):
        for k, f in funcs.items():
            times[k].append(timed(f)[1])
    med = {k: statistics.median(ts) for k, ts in times.items()}
    base = med["gradient (forward + backward of the mean loss)"]
    p("")
    p(f"cost of one product, median of {cfg.repeats} interleaved repeats:")
    p(f"  {'':<52} {'ms':>8} {'x gradient':>11}")
    for k, m in med.items():
        p(f"  {k:<52} {m * 1e3:>8.1f} {m / base:>11.2f}")
    summary[idx]["cost"] = (
        med["landscape HVP, cache_graphs=True"] / base,
        med["landscape HVP, cache_graphs=False"] / base,
    )

    if single:
        try:
            h.density(iter=3, n_v=1)
            p("PyHessian density(): ran")
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            p(f"PyHessian density(iter=3): raises {type(e).__name__}: {msg[:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, fewer probes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.repeats is not None:
        cfg = Config(**{**cfg.__dict__, "repeats": args.repeats})
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    # PyHessian calls loss.backward(create_graph=True); torch warns about the .grad cycle.
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    t0 = time.perf_counter()

    model, x, y, desc = make_model(cfg)
    n = sum(q.numel() for q in model.parameters() if q.requires_grad)
    head = [
        f"landscape vs PyHessian {getattr(pyhessian, '__version__', '0.1')}: CIFAR ResNet-18 "
        f"(width {cfg.width}, {n:,} parameters), eval mode, cross-entropy, "
        f"{'--quick' if args.quick else 'full run'}",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; data: 10-class "
        f"Gaussian mixture of 3x32x32 images (class mean + N(0,1)), seed 1",
        desc,
        "rel.err: against the reference; HVPs: products with the whole sample set; "
        "true residual: ‖Hy − λy‖/|λ| in float64",
    ]
    print("\n".join(head), flush=True)
    out: list[str] = []
    summary: list[dict] = [{}, {}]
    one = [Batch(x[: cfg.one_batch], y[: cfg.one_batch])]
    bs = cfg.multi_batch_size
    multi = [
        Batch(x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]) for i in range(cfg.multi_batches)
    ]
    run_case(f"one batch of {cfg.one_batch}", model, one, cfg, 0, summary)
    run_case(
        f"{cfg.multi_batches} batches of {bs} = {cfg.multi_batches * bs} samples",
        model,
        multi,
        cfg,
        1,
        summary,
    )

    out.append("")
    out.append("targets (issue 4), one batch | multi-batch:")

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    def both(fn: Callable[[dict], tuple[bool, str]]) -> str:
        parts = [fn(s) for s in summary]
        return " | ".join(f"{met(ok)} ({txt})" for ok, txt in parts)

    out.append(
        "  λmax ≤ 1e-6 rel. residual in ≤ PyHessian's HVPs: "
        + both(
            lambda s: (
                s["lmax"][2] <= 1e-6 and s["lmax"][0] <= s["lmax"][1],
                f"{s['lmax'][0]} vs {s['lmax'][1]} HVPs, residual {s['lmax'][2]:.1e}",
            )
        )
    )
    out.append(
        "  top-5 in ≤ 1/4 of PyHessian's HVPs:              "
        + both(
            lambda s: (
                4 * s["top5"][0] <= s["top5"][1],
                f"{s['top5'][0]} vs {s['top5'][1]} = {s['top5'][0] / s['top5'][1]:.2f}",
            )
        )
    )
    out.append(
        "  HVP ≤ 1.7x a gradient with cached graphs:        "
        + both(lambda s: (s["cost"][0] <= 1.7, f"{s['cost'][0]:.2f}x"))
    )
    out.append(
        "  trace at equal error in ≥ 10x fewer HVPs:        "
        + both(
            lambda s: (
                s["trace"][0] >= 10,
                f"{s['trace'][0]:.1f}x, {s['trace'][1]:.1f}x with Lanczos",
            )
        )
    )
    out.append(
        f"total wall time {time.perf_counter() - t0:.0f} s; 1-min load average at start "
        f"{load0:.2f}, at end {os.getloadavg()[0]:.2f} (other jobs on the cores skew the times)"
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
