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

Differences from the reference code, on purpose: normalisation is on by default (there it needs
two flags); directions are stored by parameter name, not position; a 1-D direction is never reused
for a 2-D scan.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from landscape_cli.errors import LandscapeError

NORMS = ("filter", "layer", "none")
IGNORES = ("biasbn", "none")
Direction = dict[str, Tensor]


def parameters_of(model: nn.Module) -> dict[str, Tensor]:
    """The model's trainable parameters by name (what a direction perturbs)."""
    return {k: p for k, p in model.named_parameters() if p.requires_grad}


def normalise(
    direction: Direction, weights: dict[str, Tensor], *, norm: str, ignore: str
) -> Direction:
    """Scale ``direction`` per filter/layer to ``weights`` (see module docstring)."""
    if norm not in NORMS:
        raise LandscapeError(f"`norm` must be one of {', '.join(NORMS)}, got {norm!r}")
    if ignore not in IGNORES:
        raise LandscapeError(f"`ignore` must be biasbn or none, got {ignore!r}")
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
) -> Direction:
    """A Gaussian direction, normalised per ``norm`` (drawn on the CPU, in parameter order)."""
    weights = parameters_of(model)
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


def difference(target: nn.Module, base: nn.Module) -> Direction:
    """``θ_target − θ_base`` for every parameter and floating-point buffer (interpolation).

    A tensor that the model holds under several names (an output layer tied to the input
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
    for k, v in b.items():
        if a[k].shape != v.shape:
            raise LandscapeError(f"{k} has shape {tuple(a[k].shape)} vs {tuple(v.shape)}")
        alias = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.stride()), v.shape)
        if v.numel() and alias in seen:
            continue
        seen.add(alias)
        if torch.is_floating_point(v):
            out[k] = (a[k].to(v.device) - v).detach()
    return out


def split_flat(vector, model: nn.Module, names: tuple[str, ...]) -> Direction:
    """A flat vector over ``names`` (in order) as a direction keyed by parameter name."""
    params = dict(model.named_parameters())
    out, start = {}, 0
    vec = torch.as_tensor(vector)
    for name in names:
        p = params[name]
        out[name] = vec[start : start + p.numel()].reshape(p.shape).to(p.dtype).to(p.device)
        start += p.numel()
    for name, p in parameters_of(model).items():  # parameters without gradient: not perturbed
        out.setdefault(name, torch.zeros_like(p))
    return {k: out[k] for k in parameters_of(model)}
