"""The frozen results that the Hessian estimators return (and results.py writes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LanczosResult:
    """Top eigenpairs from Lanczos with full reorthogonalisation.

    ``eigenvalues`` are algebraically descending; ``residuals[i]`` is ‖Hvᵢ − λᵢvᵢ‖ (vᵢ unit);
    ``converged[i]`` says whether it met ``residual ≤ tol·|λ|``. ``lambda_min`` is the smallest
    Ritz value of the same Krylov space, with its residual. ``basis_dtype`` is the precision the
    Krylov basis was kept in and ``orthogonality`` its measured loss of orthogonality
    ``max |QQᵀ − I|`` (``lanczos.py``, "Basis precision"); ``basis_dtype`` is empty for
    PyHessian's power iteration, which keeps no basis. The certificate of "top"
    (:func:`~landscape_cli.hessian.lanczos.lanczos_run`): ``gaps[i]`` is θᵢ minus the next lower
    Ritz value of the run, ``block_size`` the block width it ended with, ``largest_cluster`` the
    most reported values in one cluster of Ritz values, and ``multiplicity_resolved`` whether
    every cluster with a reported value below it was narrower than the block (so no copy of a
    repeated eigenvalue can be missing from the list).
    """

    eigenvalues: np.ndarray  # (k,) float64
    residuals: np.ndarray  # (k,) float64
    converged: np.ndarray  # (k,) bool
    lambda_min: float
    lambda_min_residual: float
    steps: int
    hvp_count: int
    tol: float
    eigenvectors: np.ndarray | None = field(default=None, repr=False)  # (k, n) float32 or None
    basis_dtype: str = "float64"
    orthogonality: float = 0.0
    gaps: np.ndarray | None = None  # (k,) θᵢ minus the next lower Ritz value (None: not known)
    block_size: int = 1  # the block Lanczos width the run ended with (0: no block run)
    multiplicity_resolved: bool = False  # no cluster of Ritz values filled the block
    largest_cluster: int = 1  # the most reported values in one cluster


@dataclass(frozen=True)
class TraceResult:
    """A stochastic trace estimate: mean of per-probe samples, its standard error and 95 % CI."""

    estimate: float
    stderr: float
    ci95: tuple[float, float]
    samples: np.ndarray  # (probes,) float64, one estimate of tr(H) per probe
    probes: int
    method: str  # "hutchinson" | "hutch++" | "deflated-hutchinson"
    hvp_count: int
    converged: bool  # reached the requested relative standard error
    rtol: float
    note: str = ""  # how the method was chosen


@dataclass(frozen=True)
class DensityResult:
    """Eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    Eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019), with the
    probes used and the estimated Wasserstein-1 error they reached (``density.py``).
    """

    grid: np.ndarray  # (g,) float64
    density: np.ndarray  # (g,) float64, integrates to 1 over the grid (trapezoid rule)
    nodes: np.ndarray  # (probes, steps) float64, Ritz values per probe
    weights: np.ndarray  # (probes, steps) float64, quadrature weights per probe (rows sum to 1)
    sigma: float  # Gaussian width used for smoothing
    lanczos_steps: int
    probes: int  # probes used
    hvp_count: int
    tol: float = 0.0  # requested W1 error / spectral range (0: a fixed number of probes)
    achieved_tol: float = float("nan")  # estimated W1 error / spectral range reached
    max_probes: int = 0  # the cap on probes (0: not recorded)
    krylov_start: bool = False  # the first probe continued the top-k Lanczos run


@dataclass(frozen=True)
class LayerCurvature:
    """λmax and trace of one parameter's diagonal Hessian block."""

    name: str
    numel: int
    lambda_max: float
    lambda_max_residual: float
    trace: float
    trace_stderr: float


@dataclass(frozen=True)
class HessianReport:
    """Everything ``landscape hessian`` measured on one checkpoint.

    ``curvature`` names the matrix measured (``hessian``, ``ggn`` or ``fisher``);
    ``param_names`` are the parameters it covers, in order, and ``skipped_params`` the others,
    each with its reason in ``skipped_reasons`` (``frozen``, ``not selected``, ``no gradient``).
    """

    top: LanczosResult | None
    trace: TraceResult | None
    density: DensityResult | None
    per_layer: tuple[LayerCurvature, ...]
    samples: int
    batch_size: int
    seed: int
    device: str
    dtype: str
    loss: str
    split: str
    bn_mode: str
    hvp_count: int
    seconds: float
    num_params: int
    skipped_params: tuple[str, ...] = ()
    param_names: tuple[str, ...] = ()
    param_shapes: tuple[tuple[int, ...], ...] = ()
    loss_value: float = float("nan")
    grad_norm: float = float("nan")
    curvature: str = "hessian"
    skipped_reasons: tuple[str, ...] = ()
