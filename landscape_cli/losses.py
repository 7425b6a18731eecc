"""The loss: the loss functions, their checks against the targets, the one loss/accuracy metric.

:data:`LOSSES` names the loss functions (``ce``, ``mse``; a language model's ``ce`` is the
next-token cross-entropy of :mod:`landscape_cli.token_loss`). :func:`check_loss` and
:func:`check_loss_on` refuse a loss that does not fit the targets and the model's outputs before
any computing, :func:`first_output` turns a model that cannot take the inputs into one line, and
:func:`check_not_constant` refuses a loss that does not depend on the parameters.
:func:`loss_and_accuracy` (over :func:`metric_sums`, which training shares) is the one mean loss
and accuracy of every command, on the fixed batches and in the modes of
:mod:`landscape_cli.batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from landscape_cli import distributed
from landscape_cli.batches import Batch, evaluation_mode, head, to_device
from landscape_cli.errors import LandscapeError, one_line
from landscape_cli.token_loss import IGNORE, TokenTargets, token_cross_entropy

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(output: Tensor, target: Tensor | TokenTargets) -> Tensor:
    """Mean cross-entropy of the logits ``output`` against class indices ``target``.

    For a language model's logits ``(B, T, V)`` and :class:`~landscape_cli.token_loss.TokenTargets`,
    the next-token cross-entropy of :mod:`landscape_cli.token_loss` (the batch's share of the mean
    over all predicted tokens).
    """
    if isinstance(target, TokenTargets):
        return token_cross_entropy(output, target)
    return nn.functional.cross_entropy(output, target)


def mse(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error; integer class targets are one-hot encoded first."""
    if isinstance(target, TokenTargets):
        raise LandscapeError("`loss='mse'` does not apply to language models; use `loss='ce'`")
    if not torch.is_floating_point(target):
        target = nn.functional.one_hot(target, output.shape[-1]).to(output.dtype)
    return nn.functional.mse_loss(output, target.reshape(output.shape))


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "mse": mse}


def check_loss(loss: str, output: Tensor, target: Tensor, what: str = "the targets") -> None:
    """Refuse a loss that does not fit the targets and the model's output, before computing.

    Cross-entropy needs integer class labels in ``0..C-1`` and a model with ``C ≥ 2`` outputs
    (on one output it is identically zero, so every gradient and curvature would be 0);
    floating-point targets or a one-output model call for ``--loss mse``. MSE compares the
    output with the targets (integer labels one-hot encoded), so their sizes must agree.
    """
    width = int(output.shape[-1]) if output.ndim >= 2 else 1
    if isinstance(target, TokenTargets):
        _check_token_loss(loss, output, target, width)
        return
    if loss == "ce":
        if torch.is_floating_point(target):
            raise LandscapeError(
                f"cross-entropy needs integer class labels, but {what} are floating-point "
                "(regression?); pass `loss='mse'`"
            )
        if output.ndim < 2 or width < 2:
            raise LandscapeError(
                f"cross-entropy on a model with {width} output is identically zero; "
                "pass `loss='mse'` (regression)"
            )
        if target.ndim != 1 or int(target.min()) < 0 or int(target.max()) >= width:
            raise LandscapeError(
                f"{what} are not class labels in 0..{width - 1} for a model with {width} "
                "outputs; pass `loss='mse'` for regression targets"
            )
    elif loss == "mse":
        if torch.is_floating_point(target):
            if target.numel() != output.numel():
                raise LandscapeError(
                    f"`loss='mse'`: {what} have {target.numel() // max(len(target), 1)} values per "
                    f"sample but the model has {output.numel() // max(len(output), 1)} outputs"
                )
        elif int(target.min()) < 0 or int(target.max()) >= width:
            raise LandscapeError(
                f"`loss='mse'`: {what} are integer labels outside 0..{width - 1} for a model with "
                f"{width} outputs"
            )
    else:
        raise LandscapeError(f"`loss` must be ce or mse, got {loss!r}")


def _check_token_loss(loss: str, output: Tensor, target: TokenTargets, width: int) -> None:
    """:func:`check_loss` for next-token targets: cross-entropy over the vocabulary."""
    if loss != "ce":
        raise LandscapeError(
            f"a language model's loss is the next-token cross-entropy; `loss={loss!r}` does not "
            "apply (pass `loss='ce'` or leave it out)"
        )
    if output.ndim != 3:
        raise LandscapeError(
            f"next-token targets need logits of shape (sequences, positions, vocabulary); the "
            f"model gives {tuple(output.shape)}"
        )
    labels = target.labels[target.labels >= 0]
    if labels.numel() and int(labels.max()) >= width:
        raise LandscapeError(
            f"token id {int(labels.max())} is outside the model's vocabulary of {width}"
        )


@torch.no_grad()
def check_loss_on(model: nn.Module, batches: list[Batch], loss: str) -> None:
    """Run :func:`check_loss` on the model's output for the first samples of ``batches``.

    :func:`check_loss` on the model's output for the first samples of ``batches``
    (eval mode, on the model's device; every batch's targets are checked).
    """
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    b = to_device(Batch(head(batches[0].inputs, 2), batches[0].targets[:2]), device, dtype)
    with evaluation_mode(model):
        out = first_output(model, b.inputs)
    for batch in batches:
        check_loss(loss, _widen(out, len(batch)), batch.targets)


def first_output(model: nn.Module, inputs: Any, what: str = "the data") -> Tensor:
    """``model(inputs)`` for the first samples, before any computing: one line if it fails.

    A model that cannot take the data's inputs (1×1 images through a network that pools them
    away, another number of channels, vectors into a convolution) fails in its forward pass with
    an error of its own; here that is one :class:`LandscapeError` line naming the model and the
    input shape, with the model's reason.
    """
    try:
        return model(inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        shape = tuple(inputs.shape[1:]) if isinstance(inputs, Tensor) else None
        shown = f" of shape {shape}" if shape is not None else ""
        detail = one_line(exc)
        raise LandscapeError(
            f"the model ({type(model).__name__}) cannot take the inputs{shown} of {what}: "
            f"{type(exc).__name__}: {detail[:300]}"
        ) from None


def check_not_constant(op) -> None:
    """Refuse a loss that does not depend on the parameters at all on these samples.

    When the gradient of the mean loss is exactly zero (its norm ``op.grad_norm``), one product
    of the Hessian with a seeded Gaussian vector tells a true stationary point (curvature ≠ 0,
    e.g. a perfect MSE fit) from a loss that is constant on every sample (cross-entropy on a single
    logit, targets the loss ignores): the latter would report an all-zero spectrum, which reads
    as a perfectly flat minimum, so it is an error instead.
    """
    if op.grad_norm != 0:
        return
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(op.n, generator=gen, dtype=torch.float64)
    if bool(torch.any(op.matvec(v.to(op.device)) != 0)):
        return
    raise LandscapeError(
        "the loss has an exactly zero gradient and zero curvature on every sample: it does not "
        "depend on the parameters here, which is not a flat minimum (check `loss` against the "
        "targets and the model's outputs)"
    )


def _widen(out: Tensor, n: int) -> Tensor:
    """An output-shaped stand-in with ``n`` rows (only shapes and widths are checked)."""
    return out[:1].expand(n, *out.shape[1:])


def metric_sums(
    model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn
) -> tuple[float, int, int, bool]:
    """The sums behind the mean loss and accuracy, in whatever mode ``model`` is in.

    Returns ``(Σ_b loss_b·|b|, correct, samples, classify)``: each batch's mean loss weighted by
    its size, the count of argmax predictions equal to integer targets, the sample count, and
    whether every target was an integer class label (accuracy has no meaning otherwise).
    """
    loss_sum, correct, total, classify = 0.0, 0, 0, True
    for b in batches:
        out = model(b.inputs)
        loss_sum += loss_fn(out, b.targets).item() * len(b)
        if isinstance(b.targets, TokenTargets):
            correct += _token_hits(out, b.targets) * len(b)
        elif torch.is_floating_point(b.targets):
            classify = False
        else:
            correct += int((out.argmax(-1) == b.targets).sum())
        total += len(b)
    return loss_sum, correct, total, classify


def _token_hits(out: Tensor, target: TokenTargets) -> float:
    """The batch's share of the next-token accuracy, weighted as its loss is."""
    labels = target.labels.to(out.device)
    hits = ((out.argmax(-1) == labels) & (labels != IGNORE)).sum(-1)
    return float((hits.double() * target.weight.to(out.device)).sum())


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module,
    batches: list[Batch],
    loss_fn: LossFn,
    bn_mode: str = "eval",
    *,
    sharded: bool = False,
) -> tuple[float, float]:
    """Mean loss and accuracy over ``batches`` (each batch's mean weighted by its size).

    Accuracy is the fraction of argmax predictions equal to integer targets (NaN for
    floating-point targets, where it has no meaning); for a language model, the fraction of
    predicted tokens whose argmax is the next token. With ``sharded`` (under torchrun), each
    rank evaluates its share of ``batches`` and the sums are added over the ranks.
    """
    first = batches[0].targets
    classify = isinstance(first, TokenTargets) or not torch.is_floating_point(first)
    mine = distributed.shard(batches) if sharded else batches
    with evaluation_mode(model, bn_mode):
        loss_sum, correct, total, _ = metric_sums(model, mine, loss_fn)
    if sharded:
        loss_sum, correct, total = distributed.sum_floats(loss_sum, correct, total)
    return loss_sum / total, (correct / total if classify else float("nan"))
