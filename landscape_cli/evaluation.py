"""Evaluating a model on a fixed, ordered sample set: losses, batches, modes, loss/accuracy.

Shared by the Hessian operator, the landscape scans and the audits, so that every command sees
the same loss on the same samples in the same mode.

Modes (DESIGN.md): ``bn_mode="eval"`` evaluates the whole model in eval mode (BatchNorm uses its
running statistics, dropout is off). ``bn_mode="train"`` keeps the model in eval mode except its
BatchNorm layers, which use batch statistics; each layer gets throw-away copies of its running
statistics for the forward pass (an autograd graph may keep them), and the originals are put back
afterwards, so the checkpoint's statistics never change. Scaled-dot-product attention is forced
onto the math kernel, the one with a double backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape_cli.errors import LandscapeError

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    return nn.functional.cross_entropy(output, target)


def mse(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error; integer class targets are one-hot encoded first."""
    if not torch.is_floating_point(target):
        target = nn.functional.one_hot(target, output.shape[-1]).to(output.dtype)
    return nn.functional.mse_loss(output, target.reshape(output.shape))


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "mse": mse}


@dataclass(frozen=True)
class Batch:
    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def make_batches(
    dataset: torch.utils.data.Dataset, samples: int | None, batch_size: int
) -> list[Batch]:
    """The first ``samples`` items of ``dataset`` in its own order, in batches of ``batch_size``."""
    total = len(dataset)  # type: ignore[arg-type]
    n = total if samples is None or samples <= 0 else min(samples, total)
    if n == 0:
        raise LandscapeError("the dataset is empty")
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)
    out = []
    for x, y in loader:
        out.append(Batch(x, torch.as_tensor(y)))
    return out


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Use the math kernel for scaled-dot-product attention (fused kernels lack double backward)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def to_device(b: Batch, device: torch.device | str, dtype: torch.dtype) -> Batch:
    """Move a batch to ``device``; floating-point inputs and targets take ``dtype``."""
    x = b.inputs.to(device)
    if torch.is_floating_point(x):
        x = x.to(dtype)
    y = b.targets.to(device)
    if torch.is_floating_point(y):
        y = y.to(dtype)
    return Batch(x, y)


BN_MODES = ("eval", "train")


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, bn_mode: str = "eval") -> Iterator[None]:
    """Eval mode (or eval + BatchNorm in train mode); modes and statistics restored after."""
    if bn_mode not in BN_MODES:
        raise LandscapeError(f"--bn-mode must be eval or train, got {bn_mode!r}")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    swapped: list[tuple[nn.Module, str, Tensor]] = []
    if bn_mode == "train":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
                for name in ("running_mean", "running_var", "num_batches_tracked"):
                    original = getattr(m, name, None)
                    if original is not None:
                        swapped.append((m, name, original))
                        setattr(m, name, original.clone())
    try:
        with math_attention():
            yield
    finally:
        for m, name, original in swapped:
            setattr(m, name, original)
        for m, mode in modes.items():
            m.training = mode


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
    floating-point targets, where it has no meaning). With ``sharded`` (under torchrun), each
    rank evaluates its share of ``batches`` and the sums are added over the ranks.
    """
    from landscape_cli import distributed

    classify = not torch.is_floating_point(batches[0].targets)
    mine = distributed.shard(batches) if sharded else batches
    loss_sum, correct, total = 0.0, 0.0, float(sum(len(b) for b in mine))
    with evaluation_mode(model, bn_mode):
        for b in mine:
            out = model(b.inputs)
            loss_sum += loss_fn(out, b.targets).item() * len(b)
            if classify:
                correct += int((out.argmax(-1) == b.targets).sum())
    if sharded:
        loss_sum, correct, total = distributed.sum_floats(loss_sum, correct, total)
    return loss_sum / total, (correct / total if classify else float("nan"))
