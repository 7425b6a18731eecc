"""The results file: one HDF5 file per checkpoint, written atomically under a file lock.

This is the only package of the project that imports ``h5py``. :mod:`.store` owns the file (the
locked atomic rewrite, attribute encoding, the root attributes, the checks run before computing);
one module per group owns its layout: :mod:`.hessian`, :mod:`.scan`, :mod:`.audit`. Writers take
frozen dataclasses and readers return the same ones (:class:`HessianResult` around a
:class:`~landscape_cli.hessian.types.HessianReport`, :class:`ScanResult`, :class:`AuditResult`);
the package reads them by their fields. For old scripts each also answers ``result["key"]`` as
the dicts that the readers returned before did (:class:`~landscape_cli.results.store.DictView`, a
shim nothing in the package uses).

The schema (``schema="landscape-results"``, ``schema_version=1``: every group, dataset and
attribute the commands write) is documented once, in ``docs/results-file.md``; a test
(``tests/test_docs.py``) compares it with real results files, both ways. Groups that hold
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
    "update_file",
    "verify_readable",
    "write_audit",
    "write_hessian",
    "write_or_rescue",
    "write_scan",
    "write_scan_result",
]
