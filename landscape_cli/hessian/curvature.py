r"""The curvature family: the generalized Gauss-Newton matrix and the empirical Fisher.

Both are operators of the same kind as the Hessian's
(:class:`~landscape_cli.hessian.operator.CurvatureOperator`: the same batches and weights, the
same mean loss, parameter rule, dtype, torchrun sums and product count), so every estimator
(top-k, trace, density, per-layer) runs on them unchanged. With :math:`z_b` the outputs of batch
:math:`b` (every output of every sample), :math:`L_b(z_b)` its mean loss and :math:`J_b=\partial
z_b/\partial\theta`, the loss is :math:`L=\sum_b \frac{n_b}{N} L_b` (:mod:`.operator`) and

- the **generalized Gauss-Newton matrix** (Schraudolph 2002; Martens 2020, "New insights and
  perspectives on the natural gradient method", §8) is

  .. math::

      G = \sum_b \frac{n_b}{N}\, J_b^\top\, \frac{\partial^2 L_b}{\partial z_b^2}\, J_b,

  the Hessian of the loss of the network linearised at :math:`\theta`: :math:`H = G +
  \sum_b \frac{n_b}{N}\sum_k \frac{\partial L_b}{\partial z_{bk}} \nabla^2_\theta z_{bk}`. For
  cross-entropy and MSE the output Hessian is positive semi-definite, so :math:`G\succeq 0`; for
  a network linear in :math:`\theta` with MSE, :math:`G=H`. Products: :math:`J_b v` (a
  Jacobian-vector product, by differentiating the linear map :math:`u\mapsto J_b^\top u`
  again), the output Hessian applied in closed form (cross-entropy: :math:`\frac{1}{n_b}
  (\operatorname{diag}p_i-p_ip_i^\top)` per sample with :math:`p_i` its softmax; MSE:
  :math:`\frac{2}{m}I` for :math:`m` values), then :math:`J_b^\top(\cdot)` by backward. Any other
  loss function gets its output Hessian by double backward through that same function of the
  outputs (nothing else), so a loss with a mask (padding tokens) is taken as it is.
- the **empirical Fisher** (the uncentred covariance of per-sample gradients; Kunstner, Balles &
  Hennig 2019, "Limitations of the empirical Fisher approximation") is

  .. math::

      F = \frac1N \sum_{n=1}^{N} g_n g_n^\top,\qquad g_n=\nabla_\theta \ell_n,

  with :math:`\ell_n` sample :math:`n`'s own loss (the loss function on that sample alone: its
  cross-entropy, the mean of its squared errors over its outputs, a sequence's mean token loss),
  so that :math:`\frac1N\sum_n g_n = \nabla L`. :math:`F \succeq 0`. Products without
  materialising the :math:`g_n`: sample :math:`n`'s loss depends on its own outputs
  :math:`z_n` only, so :math:`g_n = J_n^\top r_n` with :math:`r_n=\partial\ell_n/\partial z_n`,
  and :math:`F = \sum_b \frac{n_b}{N} J_b^\top R_b J_b` with the block-diagonal
  :math:`R_b = \frac{1}{n_b}\operatorname{diag}_n(r_n r_n^\top)`: the GGN's products with
  :math:`R_b` in place of the output Hessian (as curvlinops computes it). Per-sample gradients
  need samples that do not interact, so BatchNorm on batch statistics (``bn_mode="train"``) is
  refused.

Both keep, per batch, the outputs' graph and the graph of :math:`u\mapsto J_b^\top u` (built with
``create_graph``, linear in :math:`u`) when they fit in memory, like the Hessian's first-order
graphs; a product then costs two backward passes.

**Scaling against curvlinops** (``GGNLinearOperator`` and ``EFLinearOperator`` of curvlinops
3.0, on the same model, batches and parameters, with ``CrossEntropyLoss()``/``MSELoss()`` and
their default ``reduction="mean"``): curvlinops weights batch :math:`b` by :math:`n_b/N` times the
batch's mean-reduced loss, which is this mean loss, so :math:`G` equals its GGN for both losses,
and :math:`F` its EF for cross-entropy. For MSE its EF takes :math:`\ell_n` as the *sum* of
sample :math:`n`'s squared errors and divides by :math:`N\cdot C` (:math:`C` outputs per sample),
so :math:`F_\text{landscape} = F_\text{curvlinops}/C` (``reduction="sum"`` would instead drop
every :math:`1/N`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape_cli.batches import Batch
from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.hessian.operator import CurvatureOperator, HessianOperator, Parts
from landscape_cli.losses import LossFn
from landscape_cli.token_loss import IGNORE, TokenTargets

#: The curvature matrices ``landscape hessian --curvature`` offers.
CURVATURES = ("hessian", "ggn", "fisher")

#: How tables and figures name them.
CURVATURE_NAMES = {"hessian": "Hessian", "ggn": "GGN", "fisher": "empirical Fisher"}


def output_hessian(
    loss: str | None, loss_fn: LossFn, z: Tensor, targets: Tensor
) -> Callable[[Tensor], Tensor]:
    r"""The output Hessian's map :math:`r\mapsto \frac{\partial^2 L}{\partial z^2} r` at ``z``.

    Closed form for ``loss="ce"`` on ``(B, C)`` logits with class labels (softmax :math:`p_i` per
    row: :math:`\frac1B(p_i\odot r_i - p_i\,p_i^\top r_i)`) and for ``loss="mse"``
    (:math:`\frac{2}{m} r`, :math:`m` = number of output values); otherwise by double backward
    through ``loss_fn`` on ``z`` alone (its first-order graph is built once here).
    """
    z = z.detach()
    if loss == "ce" and z.ndim == 2 and targets.ndim == 1 and not targets.is_floating_point():
        p = torch.softmax(z, dim=-1)
        batch = z.shape[0]

        def ce(r: Tensor) -> Tensor:
            return (p * r - p * (p * r).sum(-1, keepdim=True)) / batch

        return ce
    if loss == "mse":
        scale = 2.0 / z.numel()
        return lambda r: r * scale
    with torch.enable_grad():
        leaf = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(leaf, targets), leaf, create_graph=True)

    def generic(r: Tensor) -> Tensor:
        if not grad.requires_grad:  # a loss linear in the outputs: no curvature
            return torch.zeros_like(r)
        (hr,) = torch.autograd.grad(grad, leaf, grad_outputs=r, retain_graph=True)
        return hr

    return generic


def per_sample_losses(loss: str | None, loss_fn: LossFn, z: Tensor, targets: Tensor) -> Tensor:
    """Each sample's own loss, shape ``(B,)``, from the batch's outputs ``z``.

    ``loss="ce"``: cross-entropy per sample; ``loss="mse"``: the mean of each sample's squared
    errors (integer labels one-hot encoded); a causal language model's sequences
    (:class:`~landscape_cli.token_loss.TokenTargets`): each sequence's own mean next-token
    cross-entropy over its predicted tokens; otherwise ``loss_fn`` on each sample's rows alone
    (``z[i:i+1]``, ``targets[i:i+1]``). Their mean is the batch's mean loss for ce and mse.
    """
    n = z.shape[0]
    if isinstance(targets, TokenTargets):  # weights 1/(its predicted tokens): its own mean
        tokens = (targets.labels != IGNORE).sum(1).clamp_min(1).to(torch.float64)
        own = TokenTargets(targets.labels, 1.0 / tokens)
        return torch.stack([loss_fn(z[i : i + 1], own[i : i + 1]) for i in range(n)])
    if loss == "ce" and z.ndim == 2 and targets.ndim == 1 and not targets.is_floating_point():
        return nn.functional.cross_entropy(z, targets, reduction="none")
    if loss == "mse":
        t = targets
        if not torch.is_floating_point(t):
            t = nn.functional.one_hot(t, z.shape[-1]).to(z.dtype)
        return ((z - t.reshape(z.shape)) ** 2).reshape(n, -1).mean(1)
    return torch.stack([loss_fn(z[i : i + 1], targets[i : i + 1]) for i in range(n)])


def output_fisher(
    loss: str | None, loss_fn: LossFn, z: Tensor, targets: Tensor
) -> Callable[[Tensor], Tensor]:
    r"""The empirical Fisher's middle matrix :math:`q\mapsto\frac1B\,r_n (r_n^\top q_n)` per sample.

    :math:`r_n = \partial\ell_n/\partial z_n` is the gradient of sample :math:`n`'s own loss
    (:func:`per_sample_losses`) with respect to its outputs, computed once here.
    """
    with torch.enable_grad():
        leaf = z.detach().clone().requires_grad_(True)
        (r,) = torch.autograd.grad(per_sample_losses(loss, loss_fn, leaf, targets).sum(), leaf)
    batch = z.shape[0]
    rows = r.reshape(batch, -1)

    def middle(q: Tensor) -> Tensor:
        dots = (rows * q.reshape(batch, -1)).sum(1, keepdim=True)
        return (rows * dots).reshape(r.shape) / batch

    return middle


@dataclass
class _Linearised:
    """One batch's graphs for products ``Jᵀ M J v``.

    ``f`` the vector-valued function of the parameters (the batch's outputs), ``u`` a zero
    tensor shaped like it, ``jt`` the pieces of ``Jᵀu`` (built with ``create_graph``, so
    differentiating them with respect to ``u`` gives ``Jv``), ``middle`` the map ``r ↦ M r``.
    """

    f: Tensor
    u: Tensor
    jt: tuple[Tensor | None, ...]
    middle: Callable[[Tensor], Tensor]


class _OuterOperator(CurvatureOperator):
    """``Σ_b w_b J_bᵀ M_b J_b`` for a per-batch function ``f_b(θ)`` and middle matrix ``M_b``.

    Subclasses give ``_function(batch) -> (f, r ↦ M r)``; the graphs and products are shared.
    """

    def _function(self, b: Batch) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        raise NotImplementedError

    def _batch_graph(self, b: Batch) -> _Linearised:
        with torch.enable_grad():
            f, middle = self._function(b)
            u = torch.zeros_like(f, requires_grad=True)
            jt = torch.autograd.grad(
                f, self.params, grad_outputs=u, create_graph=True, allow_unused=True
            )
        return _Linearised(f, u, jt, middle)

    def _batch_products(
        self, g: _Linearised, vecs: list[list[Tensor]], retain: bool
    ) -> list[Parts]:
        live = [i for i, t in enumerate(g.jt) if t is not None and t.requires_grad]
        out: list[Parts] = []
        for j, v in enumerate(vecs):
            if not live:  # no parameter moves f: a zero block
                out.append((None,) * len(self.params))
                continue
            keep = retain or j < len(vecs) - 1
            (jv,) = torch.autograd.grad(
                [g.jt[i] for i in live],
                g.u,
                grad_outputs=[v[i] for i in live],
                retain_graph=keep,
            )
            parts = torch.autograd.grad(
                g.f, self.params, grad_outputs=g.middle(jv), retain_graph=keep, allow_unused=True
            )
            out.append(parts)
        return out


class GGNOperator(_OuterOperator):
    """The generalized Gauss-Newton matrix of the mean loss (see the module docstring).

    The arguments are :class:`~landscape_cli.hessian.operator.CurvatureOperator`'s.
    """

    curvature = "ggn"

    def _function(self, b: Batch) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        z = self._output(b)
        return z, output_hessian(self.loss_name, self.loss_fn, z, b.targets)


class EmpiricalFisherOperator(_OuterOperator):
    """The empirical Fisher ``(1/N) Σ_n g_n g_nᵀ`` of per-sample gradients (module docstring).

    The arguments are :class:`~landscape_cli.hessian.operator.CurvatureOperator`'s; BatchNorm in
    train mode is refused (its per-sample losses depend on the whole batch).
    """

    curvature = "fisher"

    def _check_model(self, model: nn.Module, bn_mode: str) -> None:
        if bn_mode == "train" and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise LandscapeError(
                "`curvature='fisher'` needs per-sample gradients, but with `bn_mode='train'` "
                "BatchNorm normalises each sample by its batch's statistics, so no sample has a "
                "loss of its own; use `bn_mode='eval'`"
            )

    def _function(self, b: Batch) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        z = self._output(b)
        return z, output_fisher(self.loss_name, self.loss_fn, z, b.targets)


_OPERATORS: dict[str, type[CurvatureOperator]] = {
    "hessian": HessianOperator,
    "ggn": GGNOperator,
    "fisher": EmpiricalFisherOperator,
}


def curvature_operator(curvature: str, model: nn.Module, batches, **kwargs) -> CurvatureOperator:
    """The operator of ``curvature`` (``hessian``, ``ggn`` or ``fisher``) on ``model``.

    ``kwargs`` are :class:`~landscape_cli.hessian.operator.CurvatureOperator`'s.
    """
    check_choice("curvature", curvature, CURVATURES, one_of=True)
    return _OPERATORS[curvature](model, batches, **kwargs)
