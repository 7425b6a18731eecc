"""The Hessian of a GPT-2-shaped language model: landscape beside hessian-eigenthings (23.4).

The model is ``GPT2LMHeadModel`` built from a config (random weights, seed 0, eager attention,
eval mode; nothing is downloaded): by default GPT-2 small's shape (12 layers, width 768, 12
heads, vocabulary 50,257: 124,439,808 parameters, the output layer tied to the token
embeddings). The samples are ``--samples`` random token sequences of ``--seq-len`` tokens (seed
0, no padding) in batches of ``--batch-size``, made into landscape's batches by
:func:`landscape_cli.data.text.causal_batches` and into hessian-eigenthings' as dicts
``{input_ids, attention_mask, labels=input_ids}`` (its ``hf_lm_loss``): both libraries measure
the Hessian of the same loss (the mean next-token cross-entropy; every batch has as many
predicted tokens, so hessian-eigenthings' mean of batch means is landscape's mean over tokens)
of the same model on the same tokens.

Each (library, case) runs in a fresh process. It builds the model and the batches, then resets
the process's peak resident memory (``/proc/self/clear_refs``) and reads the resident memory
(``before``); ``peak`` is the peak resident memory (``VmHWM``) while the case ran, minus
``before``: the memory the case itself took, in bytes per parameter (``B/param``) and GiB.
``seconds`` is the case's wall time and ``CPU s`` its processor time (all threads): on a machine
shared with other work the wall time swings with their load, the processor time much less.

Cases:

- ``hvp``: one gradient of the loss, then the operator (landscape's: its gradient, graph
  measurement, first-order graphs kept when they fit, determinism check; hessian-eigenthings'
  keeps nothing), then two products; ``HVP/grad`` is the mean product's time over the
  gradient's, ``operator`` the resident memory the built operator holds.
- ``ggn``, ``fisher``: the same with the GGN and the empirical Fisher (landscape's
  :func:`~landscape_cli.hessian.curvature.curvature_operator`; hessian-eigenthings'
  ``GGNOperator`` with its ``hf_lm_forward``/``hf_lm_loss_of_output``, and
  ``EmpiricalFisherOperator`` with each sequence's mean next-token loss, through ``vmap``).
- ``top1``, ``top5``: landscape's :func:`landscape_cli.hessian.analyze` with ``--top-k`` 1 or 5,
  ``--tol`` and ``--max-steps`` (explicit residuals ‖Hv − λv‖ included), then
  hessian-eigenthings' ``lanczos(k, max_iter=m)`` with ``m`` the Lanczos steps landscape took (the
  same Krylov dimension); the residuals of its Ritz vectors are computed afterwards, untimed,
  with its own operator. landscape's HVPs count its determinism check's two products.
- ``trace``: landscape's Hutchinson trace (``--top-k 0``, Rademacher probes until the standard
  error is ``--trace-rtol`` of the estimate, at most ``--trace-probes``, default 100), then
  hessian-eigenthings' Hutchinson with as many probes (the same estimator: the same standard
  error in expectation).
- ``density``: both with their defaults (landscape: SLQ, at most 10 probes of 90 steps, adaptive;
  hessian-eigenthings: 10 runs of 80 steps), or with ``--density-probes P --density-steps S``
  both with P probes of S steps (landscape with every probe: ``density_tol=0``).

- ``kernel1``, ``kernel5``: the Lanczos of each library alone, on a diagonal operator of the
  model's size (float32 products that cost nothing), ``--max-steps`` steps, for top-1 or top-5:
  the memory the eigensolver itself takes beside the model.

``--block-size 1`` runs landscape's top-k as single-vector Lanczos (hessian-eigenthings'
algorithm) instead of its default block of 2 for k > 1 (which finds repeated eigenvalues).
``--no-cache-graphs`` measures landscape as ``landscape hessian --no-cache-graphs`` runs: each
product rebuilds its batch's first-order graph (less memory, slower products).
``--loss plain`` measures landscape with torch's ``cross_entropy`` instead of its own token loss
(:mod:`landscape_cli.token_loss`), for the before/after of the memory fix; ``--graph`` prints
what one batch's first-order graph keeps (saved tensors by kind) and the peak of one product
under both losses.

    OMP_NUM_THREADS=2 timeout 7200 .venv/bin/python benchmarks/lm_hessian.py --cases hvp,top1
    .venv/bin/python benchmarks/lm_hessian.py --layers 1 --graph --samples 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CASES = ("hvp", "ggn", "fisher", "top1", "top5", "trace", "density", "kernel1", "kernel5")
PRODUCTS = {"hvp": "hessian", "ggn": "ggn", "fisher": "fisher"}  # one-product cases
LIBS = ("landscape", "eigenthings")


def rss() -> int:
    """Resident memory of this process, bytes."""
    return _status("VmRSS")


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> int:
    """Reset the peak resident memory to the current one; returns the current one."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return rss()


def build(args):
    """The model (landscape's wrapper around transformers' GPT-2) and landscape's batches."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    from landscape_cli.data.text import causal_batches
    from landscape_cli.models.hf import HFCausalLM

    hf_logging.set_verbosity_error()
    config = transformers.GPT2Config(
        n_layer=args.layers,
        n_embd=args.width,
        n_head=args.heads,
        vocab_size=args.vocab,
        n_positions=max(1024, args.seq_len),
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    net = transformers.GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.samples, args.seq_len), generator=gen)
    batches = causal_batches(ids.tolist(), args.batch_size, None, "random tokens")
    return HFCausalLM(net), batches


def plain_loss(out, target):
    """The same loss through torch's cross_entropy (the "before" of the memory fix)."""
    import torch

    from landscape_cli.token_loss import _flat

    z, y, c = _flat(out, target)
    return (torch.nn.functional.cross_entropy(z, y, reduction="none") * c).sum()


def gradient_seconds(model, batches, loss_fn) -> float:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    for b in batches:
        loss = loss_fn(model(b.inputs), b.targets) * (len(b) / sum(len(x) for x in batches))
        torch.autograd.grad(loss, params)
    return time.perf_counter() - t0


def run_landscape(case: str, args, model, batches, before: int) -> dict:
    import torch

    from landscape_cli import hessian as hs
    from landscape_cli.batches import evaluation_mode
    from landscape_cli.hessian.curvature import curvature_operator
    from landscape_cli.losses import LOSSES

    loss_fn = plain_loss if args.loss == "plain" else LOSSES["ce"]
    out: dict = {}
    if case in PRODUCTS:
        with evaluation_mode(model):
            out["grad_s"] = gradient_seconds(model, batches, loss_fn)
    t0 = time.perf_counter()
    op = curvature_operator(
        PRODUCTS.get(case, "hessian"),
        model,
        batches,
        loss=loss_fn,
        cache_graphs=False if args.no_cache_graphs else None,
    )
    out["build_s"] = time.perf_counter() - t0
    out["operator"] = rss() - before
    out["graphs_kept"] = op.cache_graphs
    out["n"] = op.n
    if case in PRODUCTS:
        v = torch.randn(op.n, 2, generator=torch.Generator().manual_seed(1))  # as theirs
        t1 = time.perf_counter()
        for j in range(2):
            op.matvec(v[:, j])
        out["hvp_s"] = (time.perf_counter() - t1) / 2
        out["seconds"] = time.perf_counter() - t0
        out["hvps"] = op.hvp_count
        return out
    settings = {
        "top1": {"top_k": 1, "trace_probes": 0, "density_probes": 0, "tol": args.tol,
                 "max_steps": args.max_steps, "block_size": args.block_size},
        "top5": {"top_k": 5, "trace_probes": 0, "density_probes": 0, "tol": args.tol,
                 "max_steps": args.max_steps, "block_size": args.block_size},
        "trace": {"top_k": 0, "trace_method": "hutchinson", "trace_rtol": args.trace_rtol,
                  "density_probes": 0, "trace_probes": args.trace_probes},
        "density": {"top_k": 0, "trace_probes": 0},
    }[case]  # fmt: skip
    if case == "density" and args.density_probes:  # like for like: every probe, these steps
        settings.update(density_probes=args.density_probes, lanczos_steps=args.density_steps,
                        density_tol=0.0)  # fmt: skip
    res = hs.analyze(op, hs.HessianSettings(**settings))
    out["seconds"] = time.perf_counter() - t0
    # the products of the estimators, and the determinism check's two on the first batch
    out["hvps"] = op.hvp_count + round((op.batch_hvps - op.hvp_count * len(batches)) / len(batches))
    if res.top is not None:
        top = res.top
        out.update(
            eigenvalues=top.eigenvalues.tolist(),
            residuals=top.residuals.tolist(),
            steps=int(top.steps),
        )
    if res.trace is not None:
        tr = res.trace
        out.update(trace=tr.estimate, stderr=tr.stderr, probes=tr.probes)
    if res.density is not None:
        out["probes"] = int(res.density.probes)
    return out


def run_eigenthings(case: str, args, model, batches, before: int, steps: int, probes: int):
    import torch
    from hessian_eigenthings import (
        EmpiricalFisherOperator,
        GGNOperator,
        HessianOperator,
        hf_lm_forward,
        hf_lm_loss,
        hf_lm_loss_of_output,
        lanczos,
        spectral_density,
        trace,
    )

    net = model.net
    loader = [
        {**b.inputs, "labels": b.inputs["input_ids"]} for b in batches
    ]  # no padding: labels are the ids (transformers shifts them)
    out: dict = {}
    count = {"hvps": 0}
    if case in PRODUCTS:
        with torch.enable_grad():
            t0 = time.perf_counter()
            total = sum(len(x["input_ids"]) for x in loader)
            for b in loader:
                loss = net(**b).loss * (len(b["input_ids"]) / total)
                torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad])
            out["grad_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if case == "ggn":
        op = GGNOperator(net, loader, hf_lm_forward(), hf_lm_loss_of_output())
    elif case == "fisher":
        op = EmpiricalFisherOperator(net, loader, _sequence_loss)
    else:
        op = HessianOperator(net, loader, loss_fn=hf_lm_loss())
    inner = op.matvec

    def counted(v):
        count["hvps"] += 1
        return inner(v)

    op.matvec = counted  # type: ignore[method-assign]
    out["n"] = op.size
    out["operator"] = rss() - before
    if case in PRODUCTS:
        v = torch.randn(op.size, 2, generator=torch.Generator().manual_seed(1))
        t1 = time.perf_counter()
        for j in range(2):
            op.matvec(v[:, j].contiguous())
        out["hvp_s"] = (time.perf_counter() - t1) / 2
    elif case in ("top1", "top5"):
        k = 1 if case == "top1" else 5
        res = lanczos(op, k=k, max_iter=max(steps, k), seed=0, reorthogonalize=True, which="LA")
        out["seconds"] = time.perf_counter() - t0
        out["hvps"] = count["hvps"]
        out["steps"] = int(res.iterations)
        out["eigenvalues"] = res.eigenvalues.tolist()
        out["ritz_residuals"] = res.residuals.tolist()
        out["residuals"] = [  # untimed: the residual each Ritz pair really has
            float((inner(v.contiguous()).detach() - lam * v).norm())
            for v, lam in zip(res.eigenvectors, res.eigenvalues, strict=True)
        ]
    elif case == "trace":
        res = trace(op, num_matvecs=probes, method="hutchinson", seed=0)
        out.update(trace=res.estimate, stderr=res.stderr, probes=probes)
    else:
        if args.density_probes:
            res = spectral_density(
                op, num_runs=args.density_probes, lanczos_steps=args.density_steps, seed=0
            )
        else:
            res = spectral_density(op, seed=0)
        out["probes"] = args.density_probes or 10
    out.setdefault("seconds", time.perf_counter() - t0)
    out.setdefault("hvps", count["hvps"])
    return out


def _sequence_loss(model, sample):
    """One sequence's mean next-token loss (hessian-eigenthings' per-sample loss; ``vmap``)."""
    ids = sample["input_ids"].unsqueeze(0)
    return model(input_ids=ids, labels=ids).loss


class Diagonal:
    """A diagonal operator of size ``n`` with float32 products (landscape's protocol)."""

    def __init__(self, n: int) -> None:
        import torch

        self.n = n
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.d = torch.linspace(-1.0, 1.0, n, dtype=torch.float32) ** 3
        self.hvp_count = 0

    def matmat(self, vectors):
        # as landscape's operator: float64 products of float64 columns, float32 of float32 ones
        self.hvp_count += vectors.reshape(self.n, -1).shape[1]
        return vectors.reshape(self.n, -1) * self.d[:, None].to(vectors.dtype)

    def matvec(self, v):
        return self.matmat(v.reshape(-1, 1))[:, 0]


def kernel(case: str, args, lib: str, n: int) -> dict:
    """One library's Lanczos alone on :class:`Diagonal` (memory beside the model)."""
    import torch

    op = Diagonal(n)
    k = 1 if case == "kernel1" else 5
    before = reset_peak()
    t0 = time.perf_counter()
    if lib == "landscape":
        from landscape_cli.hessian import lanczos_top

        gen = torch.Generator().manual_seed(0)
        res = lanczos_top(
            op, k, tol=1e-12, max_steps=args.max_steps, generator=gen, block_size=args.block_size
        )
        steps, hvps = res.steps, op.hvp_count
    else:
        from hessian_eigenthings import LambdaOperator, lanczos

        count = {"n": 0}

        def mv(v):
            count["n"] += 1
            return v * op.d

        res = lanczos(LambdaOperator(mv, n), k=k, max_iter=args.max_steps, seed=0, which="LA")
        steps, hvps = res.iterations, count["n"]
    return {"n": n, "hvps": hvps, "steps": steps, "seconds": time.perf_counter() - t0,
            "operator": 0, "peak": _status("VmHWM") - before, "before": before}  # fmt: skip


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if args.child.startswith("kernel"):
        n = 124_439_808 if args.layers == 12 and args.width == 768 else build(args)[0]
        if not isinstance(n, int):
            n = sum(p.numel() for p in n.parameters())
        cpu = cpu_seconds()
        out = kernel(args.child, args, args.child_lib, n)
        out["cpu"] = cpu_seconds() - cpu
        return out
    model, batches = build(args)
    before = reset_peak()
    cpu = cpu_seconds()
    if args.child_lib == "landscape":
        out = run_landscape(args.child, args, model, batches, before)
    else:
        out = run_eigenthings(args.child, args, model, batches, before, args.steps, args.probes)
    out["cpu"] = cpu_seconds() - cpu
    out["peak"] = _status("VmHWM") - before
    out["before"] = before
    return out


def graph_report(args) -> str:
    """What one batch's first-order graph keeps, by kind, and one product's peak (``--loss``)."""
    import torch

    from landscape_cli.batches import evaluation_mode
    from landscape_cli.losses import LOSSES

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model, batches = build(args)
    b = batches[0]
    params = [p for p in model.parameters()]
    ptrs = {p.untyped_storage().data_ptr() for p in params}
    tokens = b.inputs["input_ids"].numel()
    name = args.loss
    fn = plain_loss if name == "plain" else LOSSES["ce"]
    if True:
        kinds: dict[str, dict[int, int]] = {}

        def pack(t, kinds=kinds):
            key = t.untyped_storage().data_ptr()
            if key in ptrs:
                kind = "parameters"
            elif t.numel() >= tokens * args.vocab:
                kind = "logits-sized"
            elif t.dim() == 4 and t.shape[-1] == t.shape[-2]:
                kind = "attention maps"
            else:
                kind = "other activations"
            kinds.setdefault(kind, {})[key] = t.untyped_storage().nbytes()
            return t

        base = reset_peak()
        with evaluation_mode(model):
            t0 = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = fn(model(b.inputs), b.targets)
                grads = torch.autograd.grad(loss, params, create_graph=True)
            t1 = time.perf_counter()
            kept = rss() - base
            v = [torch.randn_like(p) for p in params]
            torch.autograd.grad(grads, params, grad_outputs=v)
            t2 = time.perf_counter()
        peak = _status("VmHWM") - base
        saved = ", ".join(f"{k} {sum(s.values()) / 2**20:.0f}" for k, s in sorted(kinds.items()))
        return (f"{name:6} graph kept {kept / 2**20:6.0f} MiB (saved tensors, MiB: {saved}); "
                f"one product's peak {peak / 2**20:6.0f} MiB; first order {t1 - t0:.1f} s, "
                f"second backward {t2 - t1:.1f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cases", default="hvp,top1,top5")
    parser.add_argument("--libs", default="landscape,eigenthings")
    parser.add_argument("--loss", choices=("lean", "plain"), default="lean")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--trace-rtol", type=float, default=0.05)
    parser.add_argument("--trace-probes", type=int, default=100, help="the most trace probes")
    parser.add_argument(
        "--block-size", type=int, default=0, help="landscape's block width (0: its default)"
    )
    parser.add_argument(
        "--density-probes", type=int, default=0, help="both libraries: this many SLQ probes"
    )
    parser.add_argument("--density-steps", type=int, default=30, help="with --density-probes")
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--graph", action="store_true")
    parser.add_argument(
        "--no-cache-graphs", action="store_true", help="landscape rebuilds each batch's graph"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-lib", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--probes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.graph and args.child:
        print(graph_report(args))
        return
    if args.graph:  # each loss in its own process: freed memory would blur the second
        print(f"one batch of {args.batch_size} x {args.seq_len} tokens; one logits-sized tensor: "
              f"{args.batch_size * args.seq_len * args.vocab * 4 / 2**20:.0f} MiB")  # fmt: skip
        for loss in ("plain", "lean"):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--loss", loss, "--child", "graph"]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            print(proc.stdout.strip() or proc.stderr.strip().splitlines()[-1], flush=True)
        return
    if args.child:
        print(json.dumps(child(args)))
        return
    threads = os.environ.get("OMP_NUM_THREADS", "?")
    print(f"GPT-2 shape: {args.layers} layers, width {args.width}, vocabulary {args.vocab}; "
          f"{args.samples} sequences of {args.seq_len} tokens, batches of {args.batch_size}; "
          f"{threads} threads; landscape loss {args.loss}"
          f"{', graphs rebuilt per product' if args.no_cache_graphs else ''}")  # fmt: skip
    print(f"{'library':12} {'case':7} {'HVPs':>5} {'steps':>5} {'seconds':>8} {'CPU s':>7} "
          f"{'HVP/grad':>8} {'operator':>9} {'peak GiB':>8} {'B/param':>8}  result")  # fmt: skip
    for case in args.cases.split(","):
        steps = probes = 0
        for lib in args.libs.split(","):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--child", case, "--child-lib", lib,
                   "--steps", str(steps), "--probes", str(probes)]  # fmt: skip
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, check=False, timeout=args.timeout
                )
            except subprocess.TimeoutExpired:
                print(f"{lib:12} {case:7} did not finish in {args.timeout:.0f} s")
                continue
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{lib:12} {case:7} failed (exit {proc.returncode}): {tail}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            steps = r.get("steps", steps)
            probes = r.get("probes", probes)
            print(_row(lib, case, r), flush=True)


def _row(lib: str, case: str, r: dict) -> str:
    n = r["n"]
    ratio = f"{r['hvp_s'] / r['grad_s']:.2f}" if "grad_s" in r and "hvp_s" in r else ""
    if "hvp_s" in r:
        result = f"one product {r['hvp_s']:.1f} s"
        if "grad_s" in r:
            result += f", gradient {r['grad_s']:.1f} s"
        if "build_s" in r:
            result += f", operator built in {r['build_s']:.1f} s (graphs kept: {r['graphs_kept']})"
    elif "eigenvalues" in r:
        pairs = zip(r["eigenvalues"], r["residuals"], strict=True)
        rel = max(res / abs(e) if e else float("inf") for e, res in pairs)
        vals = ", ".join(f"{e:.5g}" for e in r["eigenvalues"])
        result = f"λ [{vals}], max residual/|λ| {rel:.1e}"
    elif "trace" in r:
        result = f"trace {r['trace']:.5g} ± {r['stderr']:.3g} (s.e., {r['probes']} probes)"
    elif case.startswith("kernel"):
        result = "Lanczos alone on a diagonal operator"
    else:
        result = f"density, {r.get('probes', '?')} probes"
    return (
        f"{lib:12} {case:7} {r['hvps']:5d} {r.get('steps', 0):5d} {r.get('seconds', 0):8.1f} "
        f"{r.get('cpu', 0):7.0f} {ratio:>8} {r['operator'] / 2**30:8.2f}G {r['peak'] / 2**30:8.2f} "
        f"{r['peak'] / n:8.1f}  {result}"
    )


if __name__ == "__main__":
    main()
