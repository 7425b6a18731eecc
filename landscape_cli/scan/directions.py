r"""Directions in parameter space for loss-landscape scans, keyed by parameter name.

**Filter normalisation** (Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss
Landscape of Neural Nets", §4): draw :math:`d\sim\mathcal N(0, I)` shaped like the weights, then
rescale each *filter* (the slice ``d[i]`` along the first axis: an output channel of a convolution,
a row of a linear layer) to the norm of the same slice of the weights,

.. math::

    d_{i} \leftarrow \frac{d_{i}}{\|d_{i}\|}\,\|\theta_{i}\|,

so that a step :math:`\theta+\zeta d` moves every filter by the same fraction of its own size, and
scale-invariant networks (ReLU + BatchNorm) give comparable pictures. One-dimensional parameters
(biases, BatchNorm weights) are set to zero with ``ignore="biasbn"`` (the default, as in Li et
al.'s code), or else set equal to the weights themselves (their code's choice; a zero bias then
gives a zero direction, never a division by zero). ``norm="layer"`` scales each tensor as a whole;
``norm="none"`` keeps the raw Gaussian. Only parameters are perturbed: BatchNorm running
statistics are buffers and never move.

Which parameters a direction moves follows :mod:`landscape_cli.params`: by default the trainable
ones (frozen parameters stay where they are and are listed), ``include_frozen`` adds the frozen
ones and ``params`` patterns restrict to a subset; a direction holds exactly the parameters it
moves. Interpolations move every parameter (and floating-point buffer) unless restricted by
names, so that their end point is the other checkpoint.

Differences from the reference code, on purpose: normalisation is on by default (there it needs
two flags); directions are stored by parameter name, not position; a 1-D direction is never reused
for a 2-D scan.

**Trajectory directions** (:func:`trajectory_pca`, Li et al. 2018, §7): the two principal
directions of a training run's snapshots around the checkpoint, unit vectors, not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.params import ParamSelection, select_parameters

NORMS = ("filter", "layer", "none")
IGNORES = ("biasbn", "none")
Direction = dict[str, Tensor]


def parameters_of(model: nn.Module, selection: ParamSelection | None = None) -> dict[str, Tensor]:
    """The parameters a direction perturbs, by name: by default the trainable ones."""
    return select_parameters(model, selection).as_dict()


def normalise(
    direction: Direction, weights: dict[str, Tensor], *, norm: str, ignore: str
) -> Direction:
    """Scale ``direction`` per filter/layer to ``weights`` (see module docstring)."""
    check_choice("norm", norm, NORMS, one_of=True)
    check_choice("ignore", ignore, IGNORES)
    out: Direction = {}
    for name, d in direction.items():
        w = weights[name].detach()
        d = d.clone()
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.zero_()
            elif norm != "none":
                d.copy_(w)
        elif norm == "filter":
            flat_d = d.reshape(d.shape[0], -1)
            flat_w = w.reshape(w.shape[0], -1)
            scale = flat_w.norm(dim=1) / flat_d.norm(dim=1).clamp_min(torch.finfo(d.dtype).tiny)
            d = (flat_d * scale[:, None]).reshape(d.shape)
        elif norm == "layer":
            d = d * (w.norm() / d.norm().clamp_min(torch.finfo(d.dtype).tiny))
        out[name] = d
    return out


def random_direction(
    model: nn.Module,
    *,
    generator: torch.Generator,
    norm: str = "filter",
    ignore: str = "biasbn",
    selection: ParamSelection | None = None,
) -> Direction:
    """A Gaussian direction, normalised per ``norm`` (drawn on the CPU, in parameter order).

    It covers the parameters of ``selection`` (default: the trainable ones).
    """
    weights = parameters_of(model, selection)
    raw = {
        k: torch.randn(w.shape, generator=generator, dtype=torch.float64).to(w.dtype).to(w.device)
        for k, w in weights.items()
    }
    return normalise(raw, weights, norm=norm, ignore=ignore)


def flat(direction: Direction) -> Tensor:
    """``direction`` as one flat float64 CPU vector."""
    return torch.cat([d.reshape(-1).double().cpu() for d in direction.values()])


def orthogonalise(x: Direction, y: Direction) -> Direction:
    """``y`` minus its projection on ``x`` (Gram–Schmidt over all parameters), ``y``'s norm."""
    fx, fy = flat(x), flat(y)
    if float(fx @ fx) == 0:
        return y
    fz = fy - (fx @ fy) / (fx @ fx) * fx
    fz = fz * (fy.norm() / fz.norm().clamp_min(1e-300))
    out, start = {}, 0
    for k, d in y.items():
        n = d.numel()
        out[k] = fz[start : start + n].reshape(d.shape).to(d.dtype).to(d.device)
        start += n
    return out


def difference(
    target: nn.Module, base: nn.Module, names: tuple[str, ...] | None = None
) -> Direction:
    """``θ_target − θ_base`` for every parameter and floating-point buffer (interpolation).

    With ``names``, of those parameters only (the floating-point buffers still all move). A
    tensor that the model holds under several names (an output layer tied to the input
    embeddings) is one entry, under its first name: moving each name would move it twice.
    """
    a, b = target.state_dict(), base.state_dict()
    if a.keys() != b.keys():
        missing = sorted(set(b) ^ set(a))[:4]
        raise LandscapeError(
            f"the checkpoints have different parameters ({', '.join(missing)}); "
            "interpolation needs the same architecture"
        )
    out, seen = {}, set()
    left_out = set() if names is None else {k for k, _ in base.named_parameters()} - set(names)
    for k, v in b.items():
        if a[k].shape != v.shape:
            raise LandscapeError(f"{k} has shape {tuple(a[k].shape)} vs {tuple(v.shape)}")
        alias = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.stride()), v.shape)
        if v.numel() and alias in seen:
            continue
        seen.add(alias)
        if torch.is_floating_point(v) and k not in left_out:
            out[k] = (a[k].to(v.device) - v).detach()
    return out


def split_flat(vector, model: nn.Module, names: tuple[str, ...]) -> Direction:
    """A flat vector over ``names`` (in order) as a direction of exactly those parameters."""
    params = dict(model.named_parameters())
    out, start = {}, 0
    vec = torch.as_tensor(vector)
    for name in names:
        p = params[name]
        out[name] = vec[start : start + p.numel()].reshape(p.shape).to(p.dtype).to(p.device)
        start += p.numel()
    return out


#: Columns per block in :func:`trajectory_pca` (bounded temporary memory: T × this).
_CHUNK = 1 << 20


@dataclass(frozen=True)
class TrajectoryPCA:
    """The plane of a training trajectory: its two principal directions and the projections.

    Attributes:
        directions: (2, n) unit vectors, orthogonal, zero on the coordinates left out.
        explained_variance: (2,) the share of Σᵢ‖θᵢ − θ₀‖² (over the coordinates kept) that
            each direction explains, σⱼ² / Σₖ σₖ².
        singular_values: every singular value σ of the matrix of differences, descending.
        x, y: (T,) each snapshot's coordinates ⟨θᵢ − θ₀, dⱼ⟩.
        residual: (T,) ‖θᵢ − θ₀ − xᵢd₁ − yᵢd₂‖ over *all* coordinates (those left out of the
            PCA included): how far the snapshot is from the drawn plane.
        distance: (T,) ‖θᵢ − θ₀‖ over all coordinates.
    """

    directions: np.ndarray
    explained_variance: np.ndarray
    singular_values: np.ndarray
    x: np.ndarray
    y: np.ndarray
    residual: np.ndarray
    distance: np.ndarray


def trajectory_pca(differences: np.ndarray, keep: np.ndarray) -> TrajectoryPCA:
    r"""The two leading principal directions of a trajectory around its end point.

    ``differences`` holds one row :math:`\theta_i - \theta_0` per snapshot (T × n, float64);
    ``keep`` (n,) marks the coordinates the directions may use (the default ``ignore="biasbn"``
    leaves out biases and BatchNorm parameters, as Li et al. 2018 do). With :math:`M` the kept
    columns of ``differences`` and :math:`M = U \Sigma V^\top` its thin SVD, the directions are
    the first two right singular vectors :math:`d_j = v_j`, unit vectors in parameter space,
    not filter-normalised (the trajectory's own scale is the point), and the explained
    variance of each is :math:`\sigma_j^2/\sum_k \sigma_k^2`.

    The differences are *not* centred: the plane passes through :math:`\theta_0`, the checkpoint
    the contour is drawn around, and is the one that minimises
    :math:`\sum_i \|\theta_i - \theta_0 - \mathrm{proj}_i\|^2` among planes through it (Li et
    al.'s code centres them, which fits a plane through their mean instead, not the one drawn).
    Computed through the T × T Gram matrix :math:`MM^\top = U\Sigma^2U^\top` (T snapshots, n
    parameters), :math:`v_j = M^\top u_j/\sigma_j`, a block of columns at a time, so that no
    more than the differences themselves and two n-vectors are held. Signs: each
    direction points so that the first snapshot's coordinate is ≤ 0, so the path starts on the
    left (bottom) and runs towards the checkpoint.

    Raises:
        LandscapeError: fewer than two snapshots, or differences that span fewer than two
            directions over the kept coordinates.
    """
    D = np.asarray(differences, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    if D.ndim != 2 or D.shape[0] < 2:
        raise LandscapeError("a trajectory plane needs at least two snapshots")
    T, n = D.shape
    chunks = [slice(c, min(c + _CHUNK, n)) for c in range(0, n, _CHUNK)]
    gram = np.zeros((T, T))
    for c in chunks:  # column blocks: no copy of the whole matrix
        block = D[:, c][:, keep[c]]
        gram += block @ block.T
    values, U = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1]
    values, U = np.clip(values[order], 0.0, None), U[:, order]
    sigma = np.sqrt(values)
    total = float(values.sum())
    # below 1e-6 σ₁ a second singular value is rounding (the Gram matrix squares it; float32
    # weights carry 6e-8 relative precision anyway)
    if total == 0.0 or sigma[1] <= 1e-6 * sigma[0]:
        raise LandscapeError(
            "the snapshots' differences from the checkpoint span "
            f"{'no direction' if total == 0.0 else 'a single direction'} over the parameters "
            "the directions use; a plane needs two (give snapshots from more of the run)"
        )
    directions = np.zeros((2, n))
    for c in chunks:
        directions[:, c] = (U[:, :2] / sigma[:2]).T @ D[:, c]
    directions[:, ~keep] = 0.0
    directions[0] /= np.linalg.norm(directions[0])
    # Gram-Schmidt once more: the two come out orthogonal to rounding, make it exact.
    directions[1] -= (directions[1] @ directions[0]) * directions[0]
    directions[1] /= np.linalg.norm(directions[1])
    coords = D @ directions.T  # (T, 2)
    for j in range(2):
        first = coords[0, j] if coords[0, j] != 0 else coords[np.argmax(np.abs(coords[:, j])), j]
        if first > 0:
            directions[j] *= -1.0
            coords[:, j] *= -1.0
    residual = np.array([np.linalg.norm(D[i] - coords[i] @ directions) for i in range(T)])
    return TrajectoryPCA(
        directions=directions,
        explained_variance=values[:2] / total,
        singular_values=sigma,
        x=coords[:, 0].copy(),
        y=coords[:, 1].copy(),
        residual=residual,
        distance=np.linalg.norm(D, axis=1),
    )
