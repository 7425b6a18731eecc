"""Evaluating a model on a fixed, ordered sample set: losses, batches, modes, loss/accuracy.

Shared by the Hessian operator, the landscape scans and the audits, so that every command sees
the same loss on the same samples in the same mode.

Modes: ``bn_mode="eval"`` evaluates the whole model in eval mode (BatchNorm uses its
running statistics, dropout is off). ``bn_mode="train"`` keeps the model in eval mode except its
BatchNorm layers, which use batch statistics; each layer gets throw-away copies of its running
statistics for the forward pass (an autograd graph may keep them), and the originals are put back
afterwards, so the checkpoint's statistics never change. Scaled-dot-product attention is forced
onto the math kernel, the one with a double backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from landscape_cli.errors import LandscapeError
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
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise LandscapeError(
            f"the model ({type(model).__name__}) cannot take the inputs{shown} of {what}: "
            f"{type(exc).__name__}: {detail[:300]}"
        ) from None


def check_not_constant(op) -> None:
    """Refuse a loss that does not depend on the parameters at all on these samples.

    When the gradient of the mean loss (``op.gradient``) is exactly zero, one product of the
    Hessian with a seeded Gaussian vector tells a true stationary point (curvature ≠ 0, e.g. a
    perfect MSE fit) from a loss that is constant on every sample (cross-entropy on a single
    logit, targets the loss ignores): the latter would report an all-zero spectrum, which reads
    as a perfectly flat minimum, so it is an error instead.
    """
    if bool(torch.any(op.gradient != 0)):
        return
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(op.n, generator=gen, dtype=torch.float64)
    if bool(torch.any(op.matvec(v.to(op.gradient.device)) != 0)):
        return
    raise LandscapeError(
        "the loss has an exactly zero gradient and zero curvature on every sample: it does not "
        "depend on the parameters here, which is not a flat minimum (check `loss` against the "
        "targets and the model's outputs)"
    )


def _widen(out: Tensor, n: int) -> Tensor:
    """An output-shaped stand-in with ``n`` rows (only shapes and widths are checked)."""
    return out[:1].expand(n, *out.shape[1:])


@dataclass(frozen=True)
class Batch:
    """Samples and their targets.

    ``inputs`` is a tensor, or a dict of tensors (token ids, attention mask) that the model takes as
    one argument, all with the samples on axis 0.
    """

    inputs: Tensor | dict[str, Tensor]
    targets: Tensor | TokenTargets

    def __len__(self) -> int:
        """The number of samples."""
        return len(self.targets)


def class_labels(dataset: torch.utils.data.Dataset) -> Tensor | None:
    """Integer class label of every sample, or None for regression (floating-point) targets.

    Read from the dataset's ``targets`` (or a TensorDataset's second tensor) where it has one,
    else from every sample in turn.
    """
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, torch.utils.data.TensorDataset):
        targets = dataset.tensors[1] if len(dataset.tensors) >= 2 else None
    if targets is None:
        targets = [torch.as_tensor(dataset[i][1]) for i in range(len(dataset))]  # type: ignore[arg-type]
        if not targets or any(t.ndim != 0 for t in targets):
            return None
        targets = torch.stack(targets)
    labels = torch.as_tensor(targets)
    if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        return None
    return labels.long()


def select_indices(dataset: torch.utils.data.Dataset, samples: int | None, seed: int = 0) -> Tensor:
    """The indices of the ``samples`` samples every command measures on (all when 0 or None).

    A seeded, class-stratified subset: each class gets ``samples · n_c / N`` places (rounded by
    largest remainder, ties to the lower class), filled with the first members of a random
    permutation of that class (``torch.Generator().manual_seed(seed)``); the chosen indices are
    then put in one seeded random order, so that every batch mixes the classes. Without integer
    class labels (regression), a seeded uniform subset. The whole dataset is taken in its own
    order. The same dataset, ``samples`` and ``seed`` always give the same indices.
    """
    return select_sets(dataset, samples, 1, seed)[0]


def select_sets(
    dataset: torch.utils.data.Dataset, samples: int | None, sets: int = 1, seed: int = 0
) -> list[Tensor]:
    """``sets`` disjoint sample sets of ``samples`` each, the first being :func:`select_indices`'.

    Each set is class-stratified as :func:`select_indices` describes: set k takes members
    ``k·q_c … (k+1)·q_c − 1`` of each class's seeded permutation (``q_c`` that class's places),
    then its own seeded order. Set 0 is therefore exactly the samples every command measures on,
    and set k does not depend on how many sets are asked for. Refused (one line) when the split,
    or one of its classes, is too small for ``sets`` disjoint sets.
    """
    total = len(dataset)  # type: ignore[arg-type]
    sets = max(1, int(sets))
    n = total if samples is None or samples <= 0 else min(samples, total)
    if n == 0:
        raise LandscapeError("the dataset is empty")
    if sets > 1 and (samples is None or samples <= 0 or sets * samples > total):
        raise LandscapeError(
            f"`sample_sets={sets}` disjoint sets of `samples={samples}` need "
            f"{sets * max(int(samples or 0), 1)} samples, more than the split's {total}; lower "
            "`samples` or `sample_sets`"
        )
    if n == total:
        return [torch.arange(total)]
    gen = torch.Generator().manual_seed(seed)
    labels = class_labels(dataset)
    if labels is None:
        order = torch.randperm(total, generator=gen)
        return [order[k * n : (k + 1) * n] for k in range(sets)]
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    remainder = exact - quota
    ranked = sorted(range(len(classes)), key=lambda i: (-float(remainder[i]), i))
    for i in ranked[: n - int(quota.sum())]:
        quota[i] += 1
    parts: list[list[Tensor]] = [[] for _ in range(sets)]
    for c, q in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        if sets * q > len(members):
            raise LandscapeError(
                f"class {c} has {len(members)} samples, too few for `sample_sets={sets}` "
                f"disjoint sets of {q} of them each; lower `samples` or `sample_sets`"
            )
        for k in range(sets):
            parts[k].append(members[k * q : (k + 1) * q])
    out = []
    for k in range(sets):
        chosen = torch.cat(parts[k])
        out.append(chosen[torch.randperm(len(chosen), generator=gen)])
    return out


def samples_sha256(batches: Sequence[Batch]) -> str:
    """SHA-256 of the samples themselves: their inputs and targets, in order.

    Recorded with every result, so that a result is reused or resumed only on the very same data
    (the same indices of another folder of the same size are other samples). Inputs and targets
    are hashed as two streams of (dtype and per-sample shape, whenever they change; then the
    bytes), so the batch size does not change the hash; dict inputs (token ids, attention masks)
    are hashed per sample, key by key, at the positions the attention mask keeps, so padding does
    not either. Bytes are the machine's (little-endian on every platform torch supports).
    """
    import hashlib

    inputs, targets = _Stream(hashlib.sha256()), _Stream(hashlib.sha256())
    for b in batches:
        targets.add(b.targets)
        if isinstance(b.inputs, dict):
            _hash_dict(inputs, b.inputs)
        else:
            inputs.add(b.inputs)
    return hashlib.sha256(inputs.h.digest() + targets.h.digest()).hexdigest()


class _Stream:
    """A hash of tensors' bytes, with their dtype and per-sample shape fed when they change."""

    def __init__(self, h) -> None:
        self.h = h
        self.header = b""

    def add(self, t: Tensor, tag: str = "") -> None:
        t = t.detach().cpu().contiguous()
        header = f"{tag}:{t.dtype}{tuple(t.shape[1:])};".encode()
        if header != self.header:
            self.h.update(header)
            self.header = header
        self.h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _hash_dict(stream: _Stream, inputs: dict[str, Tensor]) -> None:
    """Feed dict inputs to ``stream`` sample by sample, without their padding."""
    mask = inputs.get("attention_mask")
    n = next(iter(inputs.values())).shape[0]
    for i in range(n):
        keep = None if mask is None else mask[i].detach().cpu().bool()
        for key in sorted(inputs):
            row = inputs[key][i].detach().cpu()
            if keep is not None and row.shape[:1] == keep.shape:
                row = row[keep]
            stream.add(row.reshape(1, -1), tag=f"{key}{len(row)}")


def make_batches(
    dataset: torch.utils.data.Dataset, samples: int | None, batch_size: int, seed: int = 0
) -> list[Batch]:
    """The samples of :func:`select_indices` in that order, in batches of ``batch_size``."""
    indices = select_indices(dataset, samples, seed)
    subset = torch.utils.data.Subset(dataset, indices.tolist())
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


def head(inputs: Tensor | dict[str, Tensor], k: int) -> Tensor | dict[str, Tensor]:
    """The first ``k`` samples of a batch's inputs (a tensor or a dict of tensors)."""
    if isinstance(inputs, dict):
        return {key: v[:k] for key, v in inputs.items()}
    return inputs[:k]


def _move(x: Tensor, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    x = x.to(device)
    return x.to(dtype) if torch.is_floating_point(x) else x


def to_device(b: Batch, device: torch.device | str, dtype: torch.dtype) -> Batch:
    """Move a batch to ``device``.

    Floating-point inputs and targets take ``dtype`` (inputs that are a dict of tensors are moved
    tensor by tensor; integer token ids stay integers).
    """
    if isinstance(b.inputs, dict):
        x: Tensor | dict[str, Tensor] = {k: _move(v, device, dtype) for k, v in b.inputs.items()}
    else:
        x = _move(b.inputs, device, dtype)
    y = b.targets.to(device)
    if isinstance(y, Tensor) and torch.is_floating_point(y):
        y = y.to(dtype)
    return Batch(x, y)


BN_MODES = ("eval", "train")


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, bn_mode: str = "eval") -> Iterator[None]:
    """Eval mode (or eval + BatchNorm in train mode); modes and statistics restored after."""
    if bn_mode not in BN_MODES:
        raise LandscapeError(f"`bn_mode` must be eval or train, got {bn_mode!r}")
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
    from landscape_cli import distributed

    first = batches[0].targets
    classify = isinstance(first, TokenTargets) or not torch.is_floating_point(first)
    mine = distributed.shard(batches) if sharded else batches
    with evaluation_mode(model, bn_mode):
        loss_sum, correct, total, _ = metric_sums(model, mine, loss_fn)
    if sharded:
        loss_sum, correct, total = distributed.sum_floats(loss_sum, correct, total)
    return loss_sum / total, (correct / total if classify else float("nan"))
