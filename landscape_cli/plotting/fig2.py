r"""Fig. 2 of the DualAdam paper: Adam, InvAdam and DualAdam on 2-parameter loss landscapes.

:func:`simulate` runs the optimizers (``torch.optim.Adam`` and this project's
:class:`~dualadam.InvAdam` and :class:`~dualadam.DualAdam`) on two landscapes, in float64 on the
CPU, deterministically, and returns plain arrays; :func:`draw_fig2` draws them over the loss
contours with start points as red stars and end points as black circles.

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
from matplotlib.figure import Figure

from landscape_cli.plotting.style import new_figure

__all__ = ["LANDSCAPES", "OPTIMIZERS", "Landscape", "draw_fig2", "simulate"]

#: Optimizer keys and the names shown in the figure.
OPTIMIZERS = {"adam": "Adam", "invadam": "InvAdam", "dualadam": "DualAdam"}
_COLORS = {"adam": "#ff7f0e", "invadam": "#1f77b4", "dualadam": "#2ca02c"}
_STYLES = {"adam": "-", "invadam": "-", "dualadam": (0, (4, 3))}

SHARP_CENTER = (-1.0, 0.5)
FLAT_CENTER = (1.5, -0.5)


def custom_loss(p):
    """The two-minimum landscape (sharp well near the start, deeper flat well beyond a ridge)."""
    import torch

    x, y = p[..., 0], p[..., 1]
    d_sharp = (x - SHARP_CENTER[0]) ** 2 + (y - SHARP_CENTER[1]) ** 2
    d_flat = (x - FLAT_CENTER[0]) ** 2 + (y - FLAT_CENTER[1]) ** 2
    return 10.0 * (
        0.05 * (x**2 + y**2)
        - torch.exp(-d_sharp / (2 * 0.15**2))
        - 1.2 * torch.exp(-d_flat / (2 * 1.0**2))
    )


def eggholder_loss(p):
    """The Eggholder function (global minimum −959.64 at (512, 404.23))."""
    import torch

    x, y = p[..., 0], p[..., 1]
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


def _make_optimizer(key: str, params: list, lr: float, switch_rate: float):
    import torch

    from dualadam import DualAdam, InvAdam

    if key == "adam":
        return torch.optim.Adam(params, lr=lr)
    if key == "invadam":
        return InvAdam(params, lr=lr)
    if key == "dualadam":
        return DualAdam(params, lr=lr, switch_rate=switch_rate)
    raise ValueError(f"unknown optimizer {key!r}: choose {', '.join(OPTIMIZERS)}")


def _refine_minimum(loss, guess: tuple[float, float]) -> np.ndarray:
    """The local minimum next to ``guess`` (L-BFGS in float64)."""
    import torch

    p = torch.tensor(guess, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss(p)
        value.backward()
        return value

    opt.step(closure)
    return p.detach().numpy().copy()


def _hessian_max(loss, point: np.ndarray) -> float:
    """The largest eigenvalue of the 2×2 Hessian at ``point`` (how sharp the end point is)."""
    import torch
    from torch.autograd.functional import hessian

    h = hessian(loss, torch.tensor(point, dtype=torch.float64))
    return float(torch.linalg.eigvalsh(h).max())


def _run(spec: Landscape, key: str, steps: int) -> np.ndarray:
    import torch

    p = torch.nn.Parameter(torch.tensor(spec.start, dtype=torch.float64))
    opt = _make_optimizer(key, [p], spec.lr[key], spec.switch_rate)
    if spec.domain is not None:
        xmin, xmax, ymin, ymax = spec.domain
        lo = torch.tensor([xmin, ymin], dtype=torch.float64)
        hi = torch.tensor([xmax, ymax], dtype=torch.float64)
    path = np.empty((steps + 1, 2))
    path[0] = spec.start
    for t in range(steps):
        opt.zero_grad()
        spec.loss(p).backward()
        opt.step()
        if spec.domain is not None:
            with torch.no_grad():
                p.copy_(torch.maximum(torch.minimum(p, hi), lo))
        path[t + 1] = p.detach().numpy()
    return path


def _grid(spec: Landscape, paths: list[np.ndarray], resolution: int):
    import torch

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
) -> dict[str, Any]:
    """Run the optimizers on one landscape of :data:`LANDSCAPES`; return a panel dict.

    Keys: ``landscape``, ``title``, ``x`` (nx,), ``y`` (ny,), ``loss`` (ny, nx) on the drawn
    area, ``start`` (2,), ``steps``, ``trajectories`` {display name: (steps + 1, 2)},
    ``final_loss`` {name: float}, ``sharpness`` {name: λmax of the 2×2 Hessian at the end point},
    ``hparams`` {name: {lr, switch_rate?}}, ``minima`` {"sharp"/"flat": (2,) refined location}.
    """
    import torch

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
    return {
        "landscape": name,
        "title": spec.title,
        "x": x,
        "y": y,
        "loss": z,
        "start": np.array(spec.start, dtype=np.float64),
        "steps": steps,
        "trajectories": {OPTIMIZERS[k]: path for k, path in paths.items()},
        "final_loss": final,
        "sharpness": sharp,
        "hparams": hparams,
        "minima": minima,
    }


def simulate(
    landscapes: Sequence[str] = ("custom", "eggholder"),
    optimizers: Sequence[str] = ("adam", "invadam", "dualadam"),
    *,
    steps: int | None = None,
    resolution: int = 300,
) -> dict[str, Any]:
    """Run Fig. 2's simulations: ``{"panels": [simulate_landscape(name), ...]}``.

    Deterministic (float64 on the CPU, no randomness). ``steps`` overrides every landscape's
    step count; ``resolution`` is the side of the grid the contours are drawn from.
    """
    for key in optimizers:
        if key not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {key!r}: choose {', '.join(OPTIMIZERS)}")
    return {
        "panels": [
            simulate_landscape(name, optimizers, steps=steps, resolution=resolution)
            for name in landscapes
        ]
    }


def _display_key(name: str) -> str:
    return {v: k for k, v in OPTIMIZERS.items()}.get(name, name)


def draw_fig2(result: dict[str, Any], fig: Figure | None = None) -> Figure:
    """Draw the panels of :func:`simulate` side by side: loss contours, one trajectory per
    optimizer (legend: its final loss and the sharpness λmax at its end point), the start as a red
    star and each end point as a black circle. Returns the figure."""
    panels = result["panels"]
    if not panels:
        raise ValueError("draw_fig2 needs at least one panel")
    if fig is None:
        fig = new_figure(6.2 * len(panels), 5.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        x, y, z = panel["x"], panel["y"], panel["loss"]
        filled = ax.contourf(x, y, z, levels=40, cmap="viridis")
        ax.contour(
            x,
            y,
            z,
            levels=20,
            colors="white",
            linewidths=0.3,
            alpha=0.6,
            negative_linestyles="solid",
        )
        fig.colorbar(filled, ax=ax, shrink=0.85).set_label("loss")
        for name, path in panel["trajectories"].items():
            detail = ""
            if name in panel.get("sharpness", {}):
                detail = (
                    f" (loss {panel['final_loss'][name]:.3g}, λmax {panel['sharpness'][name]:.3g})"
                )
            ax.plot(
                path[:, 0],
                path[:, 1],
                color=_COLORS.get(_display_key(name)),
                linewidth=1.4,
                linestyle=_STYLES.get(_display_key(name), "-"),
                alpha=0.95,
                label=f"{name}{detail}",
            )
        ends = np.array([path[-1] for path in panel["trajectories"].values()])
        ax.plot(
            ends[:, 0],
            ends[:, 1],
            linestyle="none",
            marker="o",
            markersize=8,
            markerfacecolor="black",
            markeredgecolor="white",
            label="end",
            zorder=6,
        )
        start = panel["start"]
        ax.plot(
            [start[0]],
            [start[1]],
            linestyle="none",
            marker="*",
            markersize=16,
            color="red",
            markeredgecolor="white",
            label="start",
            zorder=7,
        )
        for label, point in panel.get("minima", {}).items():
            ax.annotate(
                f"{label} minimum",
                xy=(point[0], point[1]),
                xytext=(8, -14),
                textcoords="offset points",
                color="white",
                fontsize=9,
            )
        ax.set_xlim(x[0], x[-1])
        ax.set_ylim(y[0], y[-1])
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(panel["title"])
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    return fig
