"""The job layer: whole ``hessian``, ``scan`` and ``audit`` runs on checkpoint files.

The layers, from the bottom: the domain packages compute and never touch a results file on their
own (:mod:`landscape_cli.hessian`, :mod:`landscape_cli.scan`, :mod:`landscape_cli.audit`,
:mod:`landscape_cli.training`, beside the models, data, batches, losses and the results file's
readers and writers in :mod:`landscape_cli.results`); this package runs them as jobs; the
commands (:mod:`landscape_cli.commands`, the only ones to import typer or rich) parse the
command line, call a job and show its progress and results. Nothing below this package imports
it.

Each job validates its options (one-line :class:`~landscape_cli.errors.LandscapeError` for bad
ones), checks that the results file can be written *before* computing anything, loads the
checkpoint and its samples (:func:`landscape_cli.workload.load_workload` with the
:class:`~landscape_cli.workload.Source` it is given, re-exported here), computes, and writes its
group of the results file. Progress is reported through callbacks; no job prints.

- :mod:`.common`: the results-file policy every job follows
  (:func:`results_path`, :func:`provenance`, :func:`group_attrs`, :func:`check_same_options`);
- :mod:`.hessian`: :func:`hessian_job`, and the settings a ``/hessian`` records
  (:func:`hessian_settings`, :func:`measure_settings`);
- :mod:`.scan`: :class:`ScanOptions` and :func:`scan_job`; :mod:`.scan_journal` runs a plan into
  ``/scan/<name>`` resumably, :mod:`.trajectory` reads a training run's snapshots for a PCA plane;
- :mod:`.audit`: :func:`audit_job` and :func:`audit_settings`; :mod:`.audit_report` is what an
  audit tells (ranking, ``--json`` summary, markdown report);
- :mod:`.demo`: the embedded end-to-end run behind ``landscape demo``, and
  :mod:`.fig2_simulation` its two-parameter optimizer runs for Fig. 2.

Example::

    from landscape_cli.hessian import HessianSettings
    from landscape_cli.jobs import Source, hessian_job

    report, path, work = hessian_job("ckpt.pt", HessianSettings(), source=Source(samples=512))
"""

from landscape_cli.jobs.audit import audit_job, audit_settings
from landscape_cli.jobs.common import (
    check_same_options,
    group_attrs,
    provenance,
    results_path,
)
from landscape_cli.jobs.hessian import ENGINES, hessian_job, hessian_settings, measure_settings
from landscape_cli.jobs.scan import ScanOptions, scan_job
from landscape_cli.workload import Source

__all__ = [
    "ENGINES",
    "ScanOptions",
    "Source",
    "audit_job",
    "audit_settings",
    "check_same_options",
    "group_attrs",
    "hessian_job",
    "hessian_settings",
    "measure_settings",
    "provenance",
    "results_path",
    "scan_job",
]
