"""landscape: measure how flat the minima of PyTorch checkpoints are.

The commands' whole runs on checkpoint files are :mod:`landscape_cli.jobs` (``hessian_job``,
``scan_job``, ``audit_job``); the estimators under them are :mod:`landscape_cli.hessian`,
:mod:`landscape_cli.scan` and :mod:`landscape_cli.audit`; :mod:`landscape_cli.results` reads the
results files back and :mod:`landscape_cli.plotting` draws them.
"""

__version__ = "0.1.0"
