r"""The next-token cross-entropy of causal language models, with a lean double backward.

A batch of :math:`B` sequences padded to :math:`T` positions has logits :math:`z\in
\mathbb{R}^{B\times T\times V}` and :class:`TokenTargets`: for each position the id of the token
it predicts (the next one), or :data:`IGNORE` where it predicts none (a sequence's last token, and
padding), and for each sequence a weight :math:`c_i`. Its loss is

.. math::

    L_b = \sum_{i,t:\,y_{it}\ne\text{IGNORE}} c_i\,\ell_{it},\qquad
    \ell_{it} = \log\sum_v e^{z_{itv}} - z_{it\,y_{it}}.

Batches are made with :math:`c_i = N / (n_b\,T_{\text{tok}})` (:func:`token_weights`), where
:math:`N` sequences hold :math:`T_{\text{tok}}` predicted tokens in all and batch :math:`b` holds
:math:`n_b` sequences, so that the mean of the batch losses weighted by their sizes, which every
estimator takes (:class:`~landscape_cli.hessian.HessianOperator`,
:func:`~landscape_cli.losses.loss_and_accuracy`), is the mean cross-entropy over all predicted
tokens of all sequences, :math:`\sum_b \frac{n_b}{N} L_b = \frac{1}{T_{\text{tok}}}\sum
\ell_{it}`: on sequences without padding, what ``model(input_ids, labels=input_ids).loss`` of
transformers computes over the same tokens.

**Memory.** The logits are the largest tensor of a language model's graph (:math:`B\cdot T\cdot V`
values: 50,257 per token for GPT-2). Through ``torch.nn.functional.cross_entropy`` the graph that a
Hessian-vector product differentiates twice keeps three tensors of that size (the log-softmax, the
gradient of the log-probabilities, and the gradient of the logits) and the second backward makes
several more. Here the gradient of the logits, :math:`g = \bar g\,c\,(p - e_y)` with
:math:`p = \operatorname{softmax}(z)` and :math:`\bar g` the gradient of the loss, is one tensor
that the graph keeps (the output layer's backward keeps it anyway), and its own derivative is
applied in closed form,

.. math::

    \frac{\partial g}{\partial z}^{\!\top} u = \bar g\,c\,\big(p\odot u - p\,(p^\top u)\big),

with :math:`p = g / (\bar g c) + e_y` recovered from :math:`g` token by token (rows of weight 0
contribute nothing), in chunks of tokens so that no second full-size tensor is made. The logits
themselves are released once the first backward has used them. Under ``torch.func`` transforms
(``vmap``, ``jvp``) the plain ``cross_entropy`` is used instead; it computes the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: The target of a position that predicts no token (transformers' ``ignore_index``).
IGNORE = -100
#: Tokens per chunk of the loss's forward and backward passes (bounds their temporaries).
CHUNK_TOKENS = 2048


@dataclass(frozen=True)
class TokenTargets:
    """Next-token targets of a batch of sequences.

    Attributes:
        labels: ``(B, T)`` int64, the id of the token each position predicts, :data:`IGNORE`
            where it predicts none.
        weight: ``(B,)`` float64, each sequence's factor :math:`c_i` in the batch's loss (the
            module docstring).
    """

    labels: Tensor
    weight: Tensor

    def __len__(self) -> int:
        """The number of sequences."""
        return int(self.labels.shape[0])

    @property
    def shape(self) -> torch.Size:
        """The shape of the labels, ``(B, T)``."""
        return self.labels.shape

    def __getitem__(self, index: slice) -> TokenTargets:
        """The targets of a slice of the sequences."""
        return TokenTargets(self.labels[index], self.weight[index])

    def to(self, device: torch.device | str) -> TokenTargets:
        """The targets on ``device`` (the labels stay int64, the weights float64)."""
        return TokenTargets(self.labels.to(device), self.weight.to(device))

    def predicted(self) -> int:
        """The number of positions that predict a token."""
        return int((self.labels != IGNORE).sum())


def token_weights(labels: list[Tensor]) -> list[Tensor]:
    r"""The weights :math:`c_i = N / (n_b\,T_{tok})` of the sequences of each batch's labels.

    Args:
        labels: the ``(n_b, T_b)`` label tensors of all batches of the sample set.

    Returns:
        One float64 tensor of ``n_b`` weights per batch.
    """
    total = sum(int((y != IGNORE).sum()) for y in labels)
    n = sum(len(y) for y in labels)
    if total == 0:
        return [torch.zeros(len(y), dtype=torch.float64) for y in labels]
    return [torch.full((len(y),), n / (len(y) * total), dtype=torch.float64) for y in labels]


def _flat(logits: Tensor, target: TokenTargets) -> tuple[Tensor, Tensor, Tensor]:
    """Logits ``(M, V)``, labels ``(M,)`` and per-token weights ``(M,)`` (0 where ignored)."""
    z = logits.reshape(-1, logits.shape[-1])
    y = target.labels.reshape(-1).to(z.device)
    keep = y != IGNORE
    c = target.weight.to(device=z.device, dtype=z.dtype)[:, None].expand(target.labels.shape)
    c = c.reshape(-1) * keep
    return z, torch.where(keep, y, 0), c


def ce_terms(output: Tensor, target: Tensor | TokenTargets) -> tuple[Tensor, Tensor, Tensor]:
    """The cross-entropy as a weighted sum over rows of logits.

    ``(logits (M, V), labels (M,), weights (M,))`` with ``loss = Σ_m weights_m ·
    CE(logits_m, labels_m)``: for class labels the batch mean (weights ``1/B``), for
    :class:`TokenTargets` the module docstring's sum. Its Hessian with respect to the logits is
    block diagonal, ``weights_m (diag p_m − p_m p_mᵀ)`` per row.
    """
    if isinstance(target, TokenTargets):
        return _flat(output, target)
    rows = output.shape[0]
    weights = torch.full((rows,), 1.0 / rows, dtype=output.dtype, device=output.device)
    return output, target, weights


def _plain(z: Tensor, y: Tensor, c: Tensor) -> Tensor:
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    return (ce * c).sum()


class _TokenCE(torch.autograd.Function):
    """``Σ_m c_m CE(z_m, y_m)``; its backward is :class:`_TokenCEGrad` (differentiable)."""

    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, c: Tensor) -> Tensor:  # type: ignore[override]
        total = torch.zeros((), dtype=torch.float64, device=z.device)
        for s in range(0, z.shape[0], CHUNK_TOKENS):
            zc, yc = z[s : s + CHUNK_TOKENS], y[s : s + CHUNK_TOKENS]
            lse = torch.logsumexp(zc, dim=-1)
            ce = lse - zc.gather(1, yc[:, None])[:, 0]
            total += (ce * c[s : s + CHUNK_TOKENS]).sum(dtype=torch.float64)
        ctx.logits = z  # released by the first backward with create_graph (module docstring)
        ctx.save_for_backward(y, c)
        return total.to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        y, c = ctx.saved_tensors
        z = getattr(ctx, "logits", None)
        if z is None:
            raise RuntimeError(
                "the token cross-entropy's graph was already differentiated with create_graph; "
                "build the loss again"
            )
        if torch.is_grad_enabled():  # create_graph: the new graph keeps g, not the logits
            del ctx.logits
        return _TokenCEGrad.apply(z, y, c, grad), None, None


class _TokenCEGrad(torch.autograd.Function):
    """``g = ḡ c (softmax(z) − e_y)``, keeping only ``g`` for its closed-form derivative."""

    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, c: Tensor, gbar: Tensor) -> Tensor:  # type: ignore[override]
        g = torch.empty_like(z)
        scale = c * gbar.to(z.dtype)
        for s in range(0, z.shape[0], CHUNK_TOKENS):
            rows = slice(s, s + CHUNK_TOKENS)
            p = torch.softmax(z[rows], dim=-1)
            p.scatter_add_(1, y[rows, None], -torch.ones_like(p[:, :1]))
            g[rows] = p * scale[rows, None]
        # ḡ is a constant in a Hessian-vector product; where it is not (a third derivative),
        # the logits are kept too, for ∂g/∂ḡ = c (p − e_y).
        ctx.gbar_needs_grad = ctx.needs_input_grad[3]
        ctx.save_for_backward(g, y, c, scale, *([z, gbar] if ctx.gbar_needs_grad else []))
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, u: Tensor):  # type: ignore[override]
        g, y, c, scale, *kept = ctx.saved_tensors
        out = torch.empty_like(u)
        inverse = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
        live = (scale != 0).to(g.dtype)
        d_gbar = torch.zeros((), dtype=torch.float64, device=u.device)
        for s in range(0, g.shape[0], CHUNK_TOKENS):
            rows = slice(s, s + CHUNK_TOKENS)
            if kept:
                p = torch.softmax(kept[0][rows], dim=-1)
                d_gbar += (u[rows] * p).sum(-1).mul(c[rows]).sum(dtype=torch.float64)
                d_gbar -= (u[rows].gather(1, y[rows, None])[:, 0] * c[rows]).sum(
                    dtype=torch.float64
                )
            else:
                p = g[rows] * inverse[rows, None]
                p.scatter_add_(1, y[rows, None], live[rows, None])  # p = g / (ḡc) + e_y
            uc = u[rows]
            pu = (p * uc).sum(dim=-1, keepdim=True)
            out[rows] = (uc - pu).mul_(p).mul_(scale[rows, None])
        grad_gbar = d_gbar.to(kept[1].dtype).reshape(kept[1].shape) if kept else None
        return out, None, None, grad_gbar


def token_cross_entropy(output: Tensor, target: TokenTargets) -> Tensor:
    """The loss of a batch of sequences (the module docstring) from logits ``(B, T, V)``."""
    z, y, c = _flat(output, target)
    if torch._C._are_functorch_transforms_active():
        return _plain(z, y, c)
    return _TokenCE.apply(z, y, c)
