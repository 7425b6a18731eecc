"""The results file: one HDF5 file per checkpoint, written atomically under a file lock.

This is the only package of the project that imports ``h5py``. :mod:`.store` owns the file (the
locked atomic rewrite, attribute encoding, the root attributes, the checks run before computing);
one module per group owns its layout: :mod:`.hessian`, :mod:`.scan`, :mod:`.audit`. Writers take
frozen dataclasses and readers return the same ones (:class:`HessianResult` around a
:class:`~landscape_cli.hessian.types.HessianReport`, :class:`ScanResult`, :class:`AuditResult`);
each also answers ``result["key"]`` as the dicts that the readers returned before did
(:class:`~landscape_cli.results.store.DictView`).

Schema (``schema="landscape-results"``, ``schema_version=1``)::

    /                       attrs: schema, schema_version, tool_version, checkpoint,
                                   checkpoint_sha256, label, model, dataset
                                   (+ any provenance the caller passes: argv, torch_version,
                                   cuda_version, ...; None values are not written)
    /hessian                attrs: samples, batch_size, seed, device, hvp_count, seconds,
                                   dtype, loss, split, bn_mode, num_params, loss_value, grad_norm,
                                   skipped_params (1-D array of str, possibly empty),
                                   partial (True only on a run cut short by Ctrl-C)
                                   when the top-k Lanczos ran: lambda_min, lambda_min_residual,
                                   lanczos_top_steps, lanczos_top_hvp_count, tol,
                                   lanczos_basis_dtype, lanczos_orthogonality
      eigenvalues           (k,) float64, algebraically descending
      residuals             (k,) float64, ||Hv - λv|| of each pair
      converged             (k,) bool, residual <= tol·|λ|
      eigenvectors/<param>  (k, *param.shape) float32, one per parameter, named by the parameter's
                            name (dots kept); group attr param_names (array of str) gives their
                            order in the flattened vector
      trace                 scalar float64; attrs: stderr, probes, method, ci95_low, ci95_high,
                            hvp_count, converged, rtol, note
      trace_samples         (n,) float64, one estimate per probe
      density/grid          (g,) float64
      density/density       (g,) float64, integrates to 1 over the grid
      density/nodes         (probes, steps) float64, Ritz values per probe
      density/weights       (probes, steps) float64, quadrature weights per probe
                            density attrs: sigma, lanczos_steps, probes, hvp_count, tol,
                            achieved_tol, max_probes, krylov_start
      per_layer/<param>     empty group per parameter; attrs: lambda_max, lambda_max_residual,
                            trace, trace_stderr, numel
    /scan/<name>            attrs: dim, kind, ... (the scan's options and hashes)
      x, y                  (nx,), (ny,) float64 coordinates (y only for 2-D scans)
      loss, accuracy        (nx,) or (ny, nx) float64, NaN where not computed yet
      directions/<axis>/<param>  the direction of each axis, per parameter
    /audit                  attrs: one per audit measure, the settings and hashes
      hessian               the audit's own Hessian measurements, the layout of /hessian

Datasets and groups of a part that was not computed (``report.top``/``trace``/``density`` None, no
per-layer entries, eigenvectors not kept) are absent, and so are their attributes. Strings are
variable-length UTF-8 ``str``, never bytes; lists of strings are 1-D string arrays. Groups that hold
per-parameter members are created with ``track_order=True``, so iteration follows the model's
parameter order.

See :mod:`.store` for the write guarantees.
"""

from landscape_cli.results.audit import AuditResult, read_audit, write_audit
from landscape_cli.results.hessian import HessianResult, has_hessian, read_hessian, write_hessian
from landscape_cli.results.scan import (
    ScanResult,
    check_scan_name,
    read_scan,
    scan_attrs,
    scan_identity,
    scan_names,
    set_scan_points,
    write_scan,
    write_scan_result,
)
from landscape_cli.results.store import (
    SCHEMA,
    SCHEMA_VERSION,
    ResultsConflict,
    ResultsWriteError,
    all_of,
    check_folder,
    check_output_file,
    check_target,
    expect_absent,
    expect_incomplete,
    expect_settings,
    group_settings,
    list_groups,
    read_root,
    rescue_path,
    settings_mismatch,
    sha256_file,
    update_file,
    verify_readable,
    write_or_rescue,
)

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "AuditResult",
    "HessianResult",
    "ResultsConflict",
    "ResultsWriteError",
    "ScanResult",
    "all_of",
    "check_folder",
    "check_output_file",
    "check_scan_name",
    "check_target",
    "expect_absent",
    "expect_incomplete",
    "expect_settings",
    "group_settings",
    "has_hessian",
    "list_groups",
    "read_audit",
    "read_hessian",
    "read_root",
    "read_scan",
    "rescue_path",
    "scan_attrs",
    "scan_identity",
    "scan_names",
    "set_scan_points",
    "settings_mismatch",
    "sha256_file",
    "update_file",
    "verify_readable",
    "write_audit",
    "write_hessian",
    "write_or_rescue",
    "write_scan",
    "write_scan_result",
]
