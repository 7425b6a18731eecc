r"""Fig. 2's simulation: Adam, InvAdam and DualAdam on 2-parameter loss landscapes.

:func:`simulate` runs the optimizers (``torch.optim.Adam`` and this project's
:class:`~dualadam.InvAdam` and :class:`~dualadam.DualAdam`) on two landscapes, in float64 on the
CPU, deterministically, and returns their trajectories and the loss on the area they cross as a
:class:`Fig2Simulation` (plain arrays in frozen dataclasses);
:func:`landscape_cli.plotting.draw_optimizer_trajectories` draws it. Nothing here draws, and nothing
there computes.

The landscapes:

``custom``
    A gentle bowl with two Gaussian wells, scaled by 10:

    .. math::

        f(x, y) = 10\,\Big(0.05\,(x^2 + y^2)
            - e^{-\|p - (-1,\ 0.5)\|^2 / (2\cdot0.15^2)}
            - 1.2\,e^{-\|p - (1.5,\ -0.5)\|^2 / (2\cdot1^2)}\Big),

    a *sharp* minimum (width 0.15) near the start (−1.25, 0.75) and a deeper, *flat* one (width 1)
    across a ridge. Adam's step is about ``lr`` whatever the curvature, so it walks into the sharp
    well and stays there. InvAdam's step is ``lr·m̂⊙√v̂``, an effective learning rate ``lr·√v̂``
    that grows with the squared gradients it has seen: in the sharp well (curvature ≈ 440) that
    rate is far past the stability limit, so it is thrown out, and it settles in the flat well
    (curvature ≈ 12), where the same rate is stable. The scale 10 puts the gradients where this
    happens for one shared learning rate, so DualAdam (InvAdam first, Adam after the switch)
    follows InvAdam out and then converges like Adam.

``eggholder``
    The Eggholder function on [−512, 512]² (iterates are clipped to the box),

    .. math::

        f(x, y) = -(y + 47)\sin\sqrt{|x/2 + y + 47|} - x\sin\sqrt{|x - (y + 47)|},

    started at (−300, −375) and drawn on the corner that holds the trajectories: Adam stops in
    the nearest narrow minimum (λmax ≈ 8.2), InvAdam and DualAdam leave it and end in a wider and
    deeper one (λmax ≈ 1.9). This landscape is chaotic for InvAdam (a slightly different learning
    rate can end elsewhere), so only the custom landscape is the quantitative check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.autograd.functional import hessian

from dualadam import DualAdam, InvAdam

__all__ = [
    "LANDSCAPES",
    "OPTIMIZERS",
    "Fig2Panel",
    "Fig2Simulation",
    "Landscape",
    "simulate",
    "simulate_landscape",
]

#: Optimizer keys and the names shown in the figure.
OPTIMIZERS = {"adam": "Adam", "invadam": "InvAdam", "dualadam": "DualAdam"}

SHARP_CENTER = (-1.0, 0.5)
FLAT_CENTER = (1.5, -0.5)


def custom_loss(point: torch.Tensor) -> torch.Tensor:
    """The two-minimum landscape (sharp well near the start, deeper flat well beyond a ridge)."""
    x, y = point[..., 0], point[..., 1]
    d_sharp = (x - SHARP_CENTER[0]) ** 2 + (y - SHARP_CENTER[1]) ** 2
    d_flat = (x - FLAT_CENTER[0]) ** 2 + (y - FLAT_CENTER[1]) ** 2
    return 10.0 * (
        0.05 * (x**2 + y**2)
        - torch.exp(-d_sharp / (2 * 0.15**2))
        - 1.2 * torch.exp(-d_flat / (2 * 1.0**2))
    )


def eggholder_loss(point: torch.Tensor) -> torch.Tensor:
    """The Eggholder function (global minimum −959.64 at (512, 404.23))."""
    x, y = point[..., 0], point[..., 1]
    return -(y + 47) * torch.sin(torch.sqrt(torch.abs(x / 2 + y + 47))) - x * torch.sin(
        torch.sqrt(torch.abs(x - (y + 47)))
    )


@dataclass(frozen=True)
class Landscape:
    """A 2-parameter test landscape and the settings its optimizers run with."""

    name: str
    title: str
    loss: Callable[[Any], Any]
    start: tuple[float, float]
    view: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax: the least area drawn
    steps: int
    lr: dict[str, float]
    switch_rate: float  # DualAdam's ξ
    domain: tuple[float, float, float, float] | None = None  # iterates are clipped to it
    minima: dict[str, tuple[float, float]] = field(default_factory=dict)  # named local minima


LANDSCAPES: dict[str, Landscape] = {
    "custom": Landscape(
        name="custom",
        title="(a) Sharp and flat minimum",
        loss=custom_loss,
        start=(-1.25, 0.75),
        view=(-2.5, 3.0, -2.5, 2.0),
        steps=600,
        lr={"adam": 0.02, "invadam": 0.02, "dualadam": 0.02},
        switch_rate=1 / 200,
        minima={"sharp": SHARP_CENTER, "flat": FLAT_CENTER},
    ),
    "eggholder": Landscape(
        name="eggholder",
        title="(b) Eggholder function",
        loss=eggholder_loss,
        start=(-300.0, -375.0),
        view=(-512.0, -192.0, -512.0, -192.0),
        steps=1000,
        lr={"adam": 2.0, "invadam": 0.1, "dualadam": 0.2},
        switch_rate=1 / 400,
        domain=(-512.0, 512.0, -512.0, 512.0),
    ),
}


@dataclass(frozen=True)
class Fig2Panel:
    """One landscape's simulation: each optimizer's trajectory and the loss on the area drawn.

    Optimizers are keyed by their display names (:data:`OPTIMIZERS`' values), in the order run.
    """

    landscape: str  # the key in LANDSCAPES
    title: str
    x: np.ndarray  # (nx,) coordinates of the drawn area
    y: np.ndarray  # (ny,)
    loss: np.ndarray  # (ny, nx): the loss at (x[i], y[j]) is loss[j, i]
    start: np.ndarray  # (2,) where every trajectory starts
    steps: int
    trajectories: dict[str, np.ndarray]  # name -> (steps + 1, 2) iterates, the start first
    final_loss: dict[str, float]  # name -> the loss at the end point
    sharpness: dict[str, float]  # name -> λmax of the 2×2 Hessian at the end point
    hparams: dict[str, dict[str, float]]  # name -> {lr, switch_rate (DualAdam)}
    minima: dict[str, np.ndarray]  # "sharp"/"flat" -> (2,) the refined local minimum


@dataclass(frozen=True)
class Fig2Simulation:
    """What Fig. 2 draws: one panel per landscape, side by side."""

    panels: tuple[Fig2Panel, ...]


def _make_optimizer(key: str, params: list, lr: float, switch_rate: float):
    if key == "adam":
        return torch.optim.Adam(params, lr=lr)
    if key == "invadam":
        return InvAdam(params, lr=lr)
    if key == "dualadam":
        return DualAdam(params, lr=lr, switch_rate=switch_rate)
    raise ValueError(f"unknown optimizer {key!r}: choose {', '.join(OPTIMIZERS)}")


def _refine_minimum(
    loss: Callable[[torch.Tensor], torch.Tensor], guess: tuple[float, float]
) -> np.ndarray:
    """The local minimum next to ``guess`` (L-BFGS in float64)."""
    point = torch.tensor(guess, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([point], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss(point)
        value.backward()
        return value

    opt.step(closure)
    return point.detach().numpy().copy()


def _hessian_max(loss: Callable[[torch.Tensor], torch.Tensor], point: np.ndarray) -> float:
    """The largest eigenvalue of the 2×2 Hessian at ``point`` (how sharp the end point is)."""
    hess = hessian(loss, torch.tensor(point, dtype=torch.float64))
    return float(torch.linalg.eigvalsh(hess).max())


def _run(spec: Landscape, key: str, steps: int) -> np.ndarray:
    point = torch.nn.Parameter(torch.tensor(spec.start, dtype=torch.float64))
    opt = _make_optimizer(key, [point], spec.lr[key], spec.switch_rate)
    if spec.domain is not None:
        xmin, xmax, ymin, ymax = spec.domain
        lo = torch.tensor([xmin, ymin], dtype=torch.float64)
        hi = torch.tensor([xmax, ymax], dtype=torch.float64)
    path = np.empty((steps + 1, 2))
    path[0] = spec.start
    for step in range(steps):
        opt.zero_grad()
        spec.loss(point).backward()
        opt.step()
        if spec.domain is not None:
            with torch.no_grad():
                point.copy_(torch.maximum(torch.minimum(point, hi), lo))
        path[step + 1] = point.detach().numpy()
    return path


def _grid(spec: Landscape, paths: list[np.ndarray], resolution: int):
    xmin, xmax, ymin, ymax = spec.view
    pts = np.concatenate(paths)
    if (pts.min(0) < [xmin, ymin]).any() or (pts.max(0) > [xmax, ymax]).any():
        # widen the drawn area to every trajectory, with a margin, within the domain
        xmin, xmax = min(xmin, pts[:, 0].min()), max(xmax, pts[:, 0].max())
        ymin, ymax = min(ymin, pts[:, 1].min()), max(ymax, pts[:, 1].max())
        mx, my = 0.04 * (xmax - xmin), 0.04 * (ymax - ymin)
        xmin, xmax, ymin, ymax = xmin - mx, xmax + mx, ymin - my, ymax + my
        if spec.domain is not None:
            dx0, dx1, dy0, dy1 = spec.domain
            xmin, xmax, ymin, ymax = max(xmin, dx0), min(xmax, dx1), max(ymin, dy0), min(ymax, dy1)
    x = np.linspace(xmin, xmax, resolution)
    y = np.linspace(ymin, ymax, resolution)
    X, Y = np.meshgrid(x, y)
    pts = torch.from_numpy(np.stack([X, Y], axis=-1))
    with torch.no_grad():
        z = spec.loss(pts).numpy()
    return x, y, z


def simulate_landscape(
    name: str,
    optimizers: Sequence[str] = ("adam", "invadam", "dualadam"),
    *,
    steps: int | None = None,
    resolution: int = 300,
) -> Fig2Panel:
    """Run ``optimizers`` (keys of :data:`OPTIMIZERS`) on landscape ``name`` of :data:`LANDSCAPES`.

    Each starts at the landscape's start and takes ``steps`` steps (default: the landscape's);
    the loss is evaluated on a ``resolution`` × ``resolution`` grid over the landscape's view,
    widened to every trajectory (within its domain). Deterministic.
    """
    if name not in LANDSCAPES:
        raise ValueError(f"unknown landscape {name!r}: choose {', '.join(LANDSCAPES)}")
    spec = LANDSCAPES[name]
    steps = spec.steps if steps is None else int(steps)
    with torch.random.fork_rng(devices=[]):  # nothing here is random; keep callers' RNG intact
        paths = {key: _run(spec, key, steps) for key in optimizers}
        x, y, z = _grid(spec, list(paths.values()), resolution)
        minima = {k: _refine_minimum(spec.loss, v) for k, v in spec.minima.items()}
        final = {
            OPTIMIZERS[k]: float(spec.loss(torch.from_numpy(path[-1]))) for k, path in paths.items()
        }
        sharp = {OPTIMIZERS[k]: _hessian_max(spec.loss, path[-1]) for k, path in paths.items()}
    hparams: dict[str, dict[str, float]] = {}
    for key in optimizers:
        hparams[OPTIMIZERS[key]] = {"lr": spec.lr[key]}
        if key == "dualadam":
            hparams[OPTIMIZERS[key]]["switch_rate"] = spec.switch_rate
    return Fig2Panel(
        landscape=name,
        title=spec.title,
        x=x,
        y=y,
        loss=z,
        start=np.array(spec.start, dtype=np.float64),
        steps=steps,
        trajectories={OPTIMIZERS[k]: path for k, path in paths.items()},
        final_loss=final,
        sharpness=sharp,
        hparams=hparams,
        minima=minima,
    )


def simulate(
    landscapes: Sequence[str] = ("custom", "eggholder"),
    optimizers: Sequence[str] = ("adam", "invadam", "dualadam"),
    *,
    steps: int | None = None,
    resolution: int = 300,
) -> Fig2Simulation:
    """Run Fig. 2's simulations: one :func:`simulate_landscape` panel per landscape.

    Deterministic (float64 on the CPU, no randomness). ``steps`` overrides every landscape's
    step count; ``resolution`` is the side of the grid the contours are drawn from.
    """
    for key in optimizers:
        if key not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {key!r}: choose {', '.join(OPTIMIZERS)}")
    return Fig2Simulation(
        tuple(
            simulate_landscape(name, optimizers, steps=steps, resolution=resolution)
            for name in landscapes
        )
    )
