"""The samples every command measures on, and the mode it evaluates the model in.

Owns the fixed, ordered batches (:class:`Batch`, :func:`make_batches`, :func:`to_device`), the
seeded class-stratified sample selection (:func:`select_indices`, :func:`select_sets`), the hash
of the samples recorded with every result (:func:`samples_sha256`) and the evaluation modes
(:func:`evaluation_mode`), shared by the Hessian operator, the landscape scans, the audits and
training, so that every command sees the same samples in the same mode. The losses computed on
them are :mod:`landscape_cli.losses`'.

Modes: ``bn_mode="eval"`` evaluates the whole model in eval mode (BatchNorm uses its
running statistics, dropout is off). ``bn_mode="train"`` keeps the model in eval mode except its
BatchNorm layers, which use batch statistics; each layer gets throw-away copies of its running
statistics for the forward pass (an autograd graph may keep them), and the originals are put back
afterwards, so the checkpoint's statistics never change. Scaled-dot-product attention is forced
onto the math kernel, the one with a double backward.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape_cli.errors import LandscapeError
from landscape_cli.token_loss import TokenTargets


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
        # lazy: under try (no torch.nn.attention before torch 2.3)
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
