r"""The Hessian-vector-product operator: the one abstraction every estimator works over.

For a model with parameters :math:`\theta\in\mathbb{R}^n` and a fixed, ordered set of samples
split into batches :math:`B_1,\dots,B_m` of sizes :math:`n_b` (:math:`N=\sum n_b`), the loss is
the mean over samples,

.. math::

    L(\theta) = \sum_b \frac{n_b}{N}\,L_b(\theta),\qquad
    L_b(\theta) = \frac{1}{n_b}\sum_{i\in B_b}\ell(f_\theta(x_i), y_i),

and :meth:`HessianOperator.matvec` returns :math:`Hv = \sum_b \frac{n_b}{N}\nabla^2 L_b(\theta)v`
by double backward (Pearlmutter 1994): :math:`\nabla^2 L_b v = \nabla_\theta(\nabla_\theta L_b
\cdot v)`. Vectors are float64 of length :math:`n` (the parameters that receive a gradient,
concatenated in ``model.named_parameters()`` order); each batch's product is computed in the
model's dtype and accumulated in float64.

Cost: a fresh HVP rebuilds the first-order graph of a batch and then differentiates it again.
When the graphs of all batches fit in ``memory_budget`` (measured on the first batch with
saved-tensor hooks), the operator keeps each batch's first-order graph and every later product pays
only the second backward. :meth:`matmat` pushes several vectors through each batch's graph while it
is alive, so estimators that need many vectors (trace and density probes) build each graph once per
group. Measured costs (HVP ÷ gradient; benchmarks/RESULTS.md) depend on the network: on a CIFAR
ResNet-18 (width 8) 2.3–2.4 with kept graphs and 3.4–3.5 without, the same per-product cost as
PyHessian's.

Modes: ``bn_mode="eval"`` (default) or ``"train"`` (BatchNorm on batch statistics, running
statistics never changed), as :func:`landscape_cli.batches.evaluation_mode` defines them;
attention runs on the math kernel (fused kernels have no double backward).

Which parameters: the rule of :mod:`landscape_cli.params` (by default the trainable ones;
``params`` narrows them by name patterns and ``include_frozen`` adds the frozen ones); of those,
the ones that receive no gradient on any batch are left out too. Every parameter left out is in
``skipped``, with its reason in ``skipped_reasons``. The operator differentiates with respect to
its own leaf tensors (the chosen parameters' values, detached; the model runs on them through
:func:`torch.func.functional_call`), so frozen parameters can be measured without touching the
model's ``requires_grad`` flags, and parameters outside the selection build no graph. On
construction the operator applies itself twice to the same vector on the first batch and
refuses to go on if the two products differ (a model that is not deterministic would make every
estimate meaningless).

:class:`CurvatureOperator` is all of this but the product itself: the batches and their weights,
the sums over torchrun ranks, the dtype, the parameter rule, the gradient, kept graphs, the
determinism check, the progress hook and the product count. :class:`HessianOperator` adds the
Hessian's product; the generalized Gauss-Newton matrix and the empirical Fisher
(:mod:`landscape_cli.hessian.curvature`) add theirs.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape_cli import distributed
from landscape_cli.batches import BN_MODES, Batch, evaluation_mode, to_device
from landscape_cli.errors import LandscapeError
from landscape_cli.losses import LOSSES, LossFn
from landscape_cli.params import NO_GRADIENT, ParamSelection, select_parameters

#: One product, per parameter: a piece in the model's dtype, or None where it is zero.
Parts = Sequence[Tensor | None]


class CurvatureOperator:
    """A curvature matrix of the mean loss over fixed batches, as an operator on float64 vectors.

    Everything but the per-batch product, which a subclass supplies as two methods:
    ``_batch_graph(batch)`` (what one batch's products need, built once and kept between products
    when it fits in ``memory_budget``) and ``_batch_products(graph, vectors, retain)`` (that
    batch's matrix times each vector, float64 flat, freeing the graph after the last vector unless
    ``retain``). The full product is the sum of the batch products weighted by each batch's share
    of the samples, summed over torchrun ranks.

    Args:
        model: the network; moved to ``device`` in place, converted to ``dtype`` on a copy,
            otherwise unchanged (modes, BatchNorm statistics and ``requires_grad`` flags are
            restored or never touched).
        batches: the ordered sample set, already split into batches.
        loss: ``"ce"``, ``"mse"``, or a callable ``(output, target) -> mean loss``.
        bn_mode: ``"eval"`` or ``"train"`` (see the module docstring).
        device: where to compute; batches are moved there.
        dtype: the model's compute dtype (``torch.float32`` or ``torch.float64``).
        cache_graphs: keep each batch's graph between products; ``None`` decides by measuring
            the first batch's graph against ``memory_budget`` bytes.
        memory_budget: bytes the cached graphs of all batches may take (for ``cache_graphs``).
        check: run the determinism check.
        keep_gradient: keep the gradient of the mean loss as ``gradient`` (n entries in the
            model's dtype); otherwise only its norm ``grad_norm`` is kept (``gradient`` is None).
        params: which parameters (:class:`~landscape_cli.params.ParamSelection`; default: the
            trainable ones).
    """

    #: The matrix's name in results files: ``hessian``, ``ggn`` or ``fisher``.
    curvature = ""

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        *,
        loss: str | LossFn = "ce",
        bn_mode: str = "eval",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_graphs: bool | None = None,
        memory_budget: int = 2 * 1024**3,
        check: bool = True,
        params: ParamSelection | None = None,
        keep_gradient: bool = False,
    ) -> None:
        if bn_mode not in BN_MODES:
            raise LandscapeError(f"`bn_mode` must be eval or train, got {bn_mode!r}")
        if not batches:
            raise LandscapeError("no samples to compute the Hessian on")
        self._check_model(model, bn_mode)
        self.device = torch.device(device)
        self.dtype = dtype
        if any(p.dtype != dtype for p in model.parameters()):
            model = copy.deepcopy(model)  # a dtype change must not reach the caller's model
        self.model = model.to(device=self.device, dtype=dtype)  # moves (in place) to device
        self.loss_name = loss if isinstance(loss, str) else None
        self.loss_fn = LOSSES[loss] if isinstance(loss, str) else loss
        self.bn_mode = bn_mode
        # Under torchrun each rank keeps its shard of the batches, weighted by the global count;
        # products and gradients are summed over the ranks (landscape_cli.distributed).
        self.num_samples = sum(len(b) for b in batches)
        self.batches = [to_device(b, self.device, dtype) for b in distributed.shard(list(batches))]
        self.weights = [len(b) / self.num_samples for b in self.batches]
        self.hvp_count = 0  # products of the full operator with one vector
        self.batch_hvps = 0  # per-batch products, including the determinism check
        self.on_hvp: Callable[[int], None] | None = None  # progress hook: called with k per matmat

        self.selection = params or ParamSelection()
        chosen = select_parameters(self.model, self.selection)
        # The operator's own leaves: the chosen parameters' values (shared storage), and every
        # other parameter detached, so that only the chosen ones are differentiated.
        leaves = {k: p.detach().requires_grad_(True) for k, p in chosen.as_dict().items()}
        self._tensors: dict[str, Tensor] = {
            k: leaves.get(k, p.detach()) for k, p in self.model.named_parameters()
        }
        named = list(leaves.items())
        self.loss_value, grads = self._full_gradient([p for _, p in named])
        used = [i for i, g in enumerate(grads) if g is not None]
        reason = dict(zip(chosen.skipped, chosen.reasons, strict=True))
        reason.update({named[i][0]: NO_GRADIENT for i in range(len(named)) if grads[i] is None})
        order = [k for k, _ in self.model.named_parameters() if k in reason]
        self.skipped = tuple(order)
        self.skipped_reasons = tuple(reason[k] for k in order)
        sizes = {k: p.numel() for k, p in self.model.named_parameters()}
        self.skipped_numel = tuple(sizes[k] for k in order)
        if not used:
            raise LandscapeError("no parameter receives a gradient from the loss")
        self.names = tuple(named[i][0] for i in used)
        self.params = [named[i][1] for i in used]
        self.shapes = tuple(tuple(p.shape) for p in self.params)
        self.sizes = [p.numel() for p in self.params]
        self.n = sum(self.sizes)
        # the gradient of the mean loss, summed over batches in float64: its norm (what results
        # report), and on request the vector in the model's dtype (n entries the Lanczos runs
        # would otherwise hold beside their basis)
        self.grad_norm = math.sqrt(sum(float(grads[i].square().sum()) for i in used))
        self.gradient: Tensor | None = None
        if keep_gradient:
            self.gradient = torch.cat([grads[i].reshape(-1).to(self.dtype) for i in used])
        del grads

        self._cache: list[Any] | None = None
        self.graph_bytes = self._measure_graph_bytes() if self.batches else 0
        if cache_graphs is None:
            cache_graphs = self.graph_bytes * len(self.batches) <= memory_budget
        self.cache_graphs = bool(cache_graphs)
        if check and self.batches:  # first: its two graphs are gone before the kept ones come
            self._check_determinism()
        if self.cache_graphs:
            self._cache = [self._batch_graph(b) for b in self.batches]

    # -- what a subclass supplies ---------------------------------------------------------------

    def _check_model(self, model: nn.Module, bn_mode: str) -> None:
        """Refuse a model or mode the curvature is not defined for (all are, by default)."""

    def _batch_graph(self, b: Batch) -> Any:
        """What one batch's products need (kept between products when ``cache_graphs``)."""
        raise NotImplementedError

    def _batch_products(self, graph: Any, vecs: list[list[Tensor]], retain: bool) -> list[Parts]:
        """One batch's matrix times each of ``vecs`` (per-parameter pieces), per parameter.

        Each product is a tuple with one piece per parameter (None for a zero piece), in the
        model's dtype: :meth:`matmat` adds them into its float64 columns piece by piece, so no
        flat copy of a product is made.
        """
        raise NotImplementedError

    # -- plumbing ---------------------------------------------------------------------------

    def _mode(self) -> contextlib.AbstractContextManager[None]:
        return evaluation_mode(self.model, self.bn_mode)

    def _output(self, b: Batch) -> Tensor:
        """The model's output on ``b``, as a function of the operator's leaves."""
        with self._mode():
            return functional_call(self.model, self._tensors, (b.inputs,))

    def _loss(self, b: Batch) -> Tensor:
        return self.loss_fn(self._output(b), b.targets)

    def _full_gradient(self, params: list[Tensor]) -> tuple[float, list[Tensor | None]]:
        total = 0.0
        acc: list[Tensor | None] = [None] * len(params)
        for b, w in zip(self.batches, self.weights, strict=True):
            with torch.enable_grad():
                loss = self._loss(b)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            total += w * loss.item()
            for i, g in enumerate(grads):
                if g is not None:
                    g = g.detach().double() * w
                    acc[i] = g if acc[i] is None else acc[i] + g
        if distributed.active():
            got = distributed.sum_(torch.tensor([float(a is not None) for a in acc]))
            flat = torch.cat(
                [(a if a is not None else torch.zeros_like(p, dtype=torch.float64)).reshape(-1)
                 for a, p in zip(acc, params, strict=True)]
            )  # fmt: skip
            flat = distributed.sum_(flat.to(self.device))
            total = distributed.sum_floats(total)[0]
            parts = torch.split(flat, [p.numel() for p in params])
            acc = [
                part.reshape(p.shape) if got[i] > 0 else None
                for i, (part, p) in enumerate(zip(parts, params, strict=True))
            ]
        if not math.isfinite(total):
            raise LandscapeError(f"the loss is not finite ({total}) on these samples")
        return total, acc

    def _measure_graph_bytes(self) -> int:
        """Bytes the first batch's kept graph holds alive (saved tensors, gradients).

        Saved parameters are not counted: they live anyway.
        """
        seen: dict[int, int] = {}
        own = {p.untyped_storage().data_ptr() for p in self.params}

        def pack(t: Tensor) -> Tensor:
            try:
                key = t.untyped_storage().data_ptr()
                if key in own:
                    return t
                seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
            except (RuntimeError, NotImplementedError):
                seen[id(t)] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            graph = self._batch_graph(self.batches[0])
        del graph
        return sum(seen.values()) + self.n * torch.finfo(self.dtype).bits // 8

    def _products(self, graph: Any, vecs: list[list[Tensor]], retain: bool) -> list[Parts]:
        self.batch_hvps += len(vecs)
        return self._batch_products(graph, vecs, retain)

    def _check_determinism(self) -> None:
        gen = torch.Generator().manual_seed(12345)  # drawn in the model's dtype: no float64 copy
        v = self._split(torch.randn(self.n, generator=gen, dtype=self.dtype).to(self.device))
        b = self.batches[0]
        first = self._products(self._batch_graph(b), [v], retain=False)[0]
        second = self._products(self._batch_graph(b), [v], retain=False)[0]
        scale = max((h.abs().max().item() for h in first if h is not None), default=0.0)
        diff = max(
            (
                (x if y is None else -y if x is None else x - y).abs().max().item()
                for x, y in zip(first, second, strict=True)
                if x is not None or y is not None
            ),
            default=0.0,
        )
        tol = 0.0 if self.device.type == "cpu" else 1e-4 * max(scale, 1e-30)
        if diff > tol:
            raise LandscapeError(
                f"the model is not deterministic: two products of the same vector with the "
                f"{self.curvature or 'curvature'} operator differ by {diff:.3g} (max {scale:.3g}); "
                "estimates would be meaningless"
            )

    def _split(self, v: Tensor) -> list[Tensor]:
        return [
            c.reshape(s).to(self.dtype)
            for c, s in zip(torch.split(v, self.sizes), self.shapes, strict=True)
        ]

    def _add(self, column: Tensor, parts: Parts, alpha: float) -> None:
        """``column += alpha · parts`` (float64), parameter by parameter: no flat copy is made."""
        start = 0
        for h, size in zip(parts, self.sizes, strict=True):
            if h is not None:
                column[start : start + size].add_(h.reshape(-1), alpha=alpha)
            start += size

    # -- the operator -------------------------------------------------------------------------

    def matmat(self, vectors: Tensor) -> Tensor:
        """``A @ vectors`` for a matrix of shape (n, k); each column is one product.

        The result is float64 for float64 columns (the operator's vectors), and float32 only
        for float32 columns of a float32 model.
        """
        squeeze = vectors.dim() == 1
        # Columns keep their dtype until each part is cast to the model's (one copy, not two).
        mat = vectors.reshape(self.n, -1).to(device=self.device)
        k = mat.shape[1]
        cols = mat.T.contiguous()  # contiguous columns: the same kernels whatever k is
        split = [self._split(cols[j]) for j in range(k)]
        # float64 columns (the products summed over batches in float64); float32 columns of a
        # float32 model stay float32 (a float32 Lanczos basis: no float64 copy of n-vectors)
        # Stored as rows (k, n) and returned as their (n, k) view: each column is contiguous,
        # and a recurrence takes the rows as they are (no transposed copy of n-vectors).
        rows = torch.zeros(
            k, self.n, dtype=torch.promote_types(mat.dtype, self.dtype), device=self.device
        )
        for i, (b, w) in enumerate(zip(self.batches, self.weights, strict=True)):
            graph = self._cache[i] if self._cache is not None else self._batch_graph(b)
            for j, av in enumerate(self._products(graph, split, retain=self._cache is not None)):
                self._add(rows[j], av, w)
        distributed.sum_(rows)
        out = rows.T
        self.hvp_count += k
        if self.on_hvp is not None:
            self.on_hvp(k)
        return out[:, 0] if squeeze else out

    def matvec(self, v: Tensor) -> Tensor:
        """``A @ v`` for a float64 vector of length n (one product)."""
        return self.matmat(v.reshape(-1, 1))[:, 0]

    def blocks(self) -> list[tuple[str, int, int]]:
        """``(name, start, stop)`` of each parameter's slice of the flat vector.

        A model with a ``parameter_group(name) -> str`` method (a Hugging Face folder groups by
        transformer block, :class:`landscape_cli.models.hf.HFClassifier`) gets one block per run
        of consecutive parameters in the same group, named by the group. Blocks cover the
        operator's parameters only (with ``params``, the blocks within the subset).
        """
        group = getattr(self.model, "parameter_group", None)
        out: list[tuple[str, int, int]] = []
        start = 0
        for name, size in zip(self.names, self.sizes, strict=True):
            key = group(name) if callable(group) else name
            if out and callable(group) and out[-1][0] == key and out[-1][2] == start:
                out[-1] = (key, out[-1][1], start + size)
            else:
                out.append((key, start, start + size))
            start += size
        return out

    def dense(self) -> Tensor:
        """The full n×n matrix by n products (tests and tiny models only)."""
        return self.matmat(torch.eye(self.n, dtype=torch.float64))


class HessianOperator(CurvatureOperator):
    """Hessian of the mean loss over fixed batches, as a linear operator on float64 vectors.

    The arguments are :class:`CurvatureOperator`'s. Each batch's product is a double backward
    through its first-order graph (the gradient built with ``create_graph``), which is what is
    kept between products.
    """

    curvature = "hessian"

    def _batch_graph(self, b: Batch) -> tuple[Tensor, ...]:
        with torch.enable_grad():
            loss = self._loss(b)
            return torch.autograd.grad(loss, self.params, create_graph=True)

    def _batch_products(
        self, grads: tuple[Tensor, ...], vecs: list[list[Tensor]], retain: bool
    ) -> list[Parts]:
        # A gradient with no graph is constant in θ (its rows of H are zero): leave it out.
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        out: list[Parts] = []
        for j, v in enumerate(vecs):
            if not live:
                out.append((None,) * len(self.params))
                continue
            keep = retain or j < len(vecs) - 1
            out.append(
                torch.autograd.grad(
                    [grads[i] for i in live],
                    self.params,
                    grad_outputs=[v[i] for i in live],
                    retain_graph=keep,
                    allow_unused=True,
                )
            )
        return out
