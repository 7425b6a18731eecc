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
class SampleSets:
    """The top eigenvalues and the trace on K disjoint sample sets of the same size.

    How much would λmax move with other samples? Set 0 is the run's own samples (its values are
    the run's); sets 1 … K−1 are the next disjoint, seeded, class-stratified sets of as many
    samples (:func:`~landscape_cli.batches.select_sets`), each measured with the same settings
    and random streams. ``eigenvalues`` is (K, k) (k = 0 without a top-k), ``trace`` and
    ``trace_stderr`` (K,) (NaN without a trace), ``samples_sha256`` each set's data hash and
    ``hvp_count`` the products of sets 1 … K−1. The spread over the sets is their sample
    standard deviation: the scale on which one set's value moves with the samples (each set's
    own estimator error, its residual or standard error, is part of it).
    """

    samples_sha256: tuple[str, ...]
    eigenvalues: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    hvp_count: int = 0

    @property
    def sets(self) -> int:
        """K, the number of sets."""
        return len(self.samples_sha256)

    @property
    def lambda_max(self) -> np.ndarray:
        """(K,) the largest eigenvalue of each set (NaN without a top-k)."""
        ev = np.asarray(self.eigenvalues, dtype=np.float64)
        return ev[:, 0] if ev.ndim == 2 and ev.shape[1] else np.full(self.sets, np.nan)

    @staticmethod
    def spread(values: np.ndarray) -> tuple[float, float]:
        """The mean and the sample standard deviation of ``values`` (NaN without two)."""
        v = np.asarray(values, dtype=np.float64)
        if len(v) < 2 or not np.isfinite(v).all():
            return float(np.mean(v)) if len(v) else float("nan"), float("nan")
        return float(v.mean()), float(v.std(ddof=1))


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
    sample_sets: SampleSets | None = None  # the top-k and trace on further sample sets
    curvature: str = "hessian"
    skipped_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    """What :func:`~landscape_cli.hessian.analyze` computed, by estimator (None: not run).

    ``top`` (Lanczos top-k), ``trace``, ``density`` (SLQ) and ``per_layer`` (one
    :class:`LayerCurvature` per parameter block); ``sample_sets``, the top-k and the trace on
    further sample sets (:func:`~landscape_cli.hessian.sample_set_spread`), when the caller
    added them. With ``landscape hessian --engine pyhessian``
    (:func:`~landscape_cli.hessian.pyhessian_engine.analyze_pyhessian`) also
    ``pyhessian_hvp_count``, PyHessian's products (which the operator does not count), and
    ``pyhessian_stopped``, whether PyHessian's own rule stopped each eigenvalue's iteration.
    """

    top: LanczosResult | None = None
    trace: TraceResult | None = None
    density: DensityResult | None = None
    per_layer: tuple[LayerCurvature, ...] = ()
    sample_sets: SampleSets | None = None
    pyhessian_hvp_count: int = 0
    pyhessian_stopped: tuple[bool, ...] | None = None

    @property
    def computed(self) -> bool:
        """Whether any estimate is here (an interrupted run without one has nothing to keep)."""
        return any((self.top, self.trace, self.density, self.per_layer))
