"""The ``/audit`` group.

One attribute per audit measure (and the run's settings and hashes), and in ``/audit/hessian`` the
audit's own Hessian measurements when it could not reuse ``/hessian``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape_cli.errors import LandscapeError
from landscape_cli.results import store
from landscape_cli.results import typed as t
from landscape_cli.results.hessian import HessianResult, read_group, write_group
from landscape_cli.results.store import DictView, open_read, set_attr

if TYPE_CHECKING:
    import h5py

    from landscape_cli.hessian.types import HessianReport

__all__ = ["AuditResult", "read_audit", "write_audit"]


@dataclass(frozen=True)
class AuditResult(DictView):
    """The ``/audit`` group as stored.

    ``measures`` holds every attribute of the group as plain values: the measures (numbers, str,
    lists; numeric lists come back as numpy arrays), the ``matched_*`` ones, and the attributes
    the writer added (hashes, settings as JSON text). ``hessian`` is ``/audit/hessian`` read back
    (None when the audit reused ``/hessian``).

    ``result["key"]`` (:class:`~landscape_cli.results.store.DictView`) is ``measures["key"]``, as
    the dict the reader returned before.
    """

    measures: Mapping[str, Any] = field(default_factory=dict)
    hessian: HessianResult | None = None

    def _view(self) -> dict[str, Any]:
        return dict(self.measures)


def write_audit(
    path: str | os.PathLike[str],
    root: Mapping[str, Any],
    measures: Mapping[str, Any] | AuditResult,
    *,
    hessian: HessianReport | HessianResult | None = None,
    attrs: Mapping[str, Any] | None = None,
    drop_foreign: bool = False,
    check: store.Check | None = None,
) -> Path:
    """Create (or replace) ``/audit``.

    One attribute per audit measure (numbers, lists, str), plus ``attrs``; with ``hessian``, the
    audit's own Hessian measurements go to ``/audit/hessian`` (the layout of ``/hessian``; an
    existing ``/hessian`` is never touched). An :class:`AuditResult` brings its measures and its
    ``hessian``. ``check`` runs under the file's lock right before the write.
    """
    if isinstance(measures, AuditResult):
        hessian = measures.hessian if hessian is None else hessian
        measures = measures.measures

    def mutate(f: h5py.File) -> None:
        if "audit" in f:
            del f["audit"]
        g = f.create_group("audit")
        for key, value in {**measures, **(attrs or {})}.items():
            if value is not None:
                set_attr(g, key, value)
        if hessian is not None:
            write_group(f, hessian, "audit/hessian")

    return store.update_file(path, root, mutate, drop_foreign=drop_foreign, check=check)


def read_audit(path: str | os.PathLike[str]) -> AuditResult:
    """Read ``/audit`` (and ``/audit/hessian`` when present) back as an :class:`AuditResult`."""
    with open_read(path) as f:
        g = t.group(f, "audit", None)
        if g is None:
            raise LandscapeError(f"{path} has no audit; run `landscape audit` on its checkpoint")
        return read_audit_group(g)


#: The kinds of ``/audit``'s settings and hashes (:mod:`.typed`); the measures are plain data.
AUDIT_KINDS = {
    "checkpoint_sha256": t.STR,
    "samples_sha256": t.STR,
    "settings": t.JSON_TEXT,
    "samples": t.COUNT,
    "epsilon": t.FLOAT,
    "rho": t.FLOAT,
}


def read_audit_group(g: h5py.Group) -> AuditResult:
    """The :class:`AuditResult` stored in the open group ``g`` (every value checked)."""
    hg = t.group(g, "hessian", None)
    hessian = read_group(hg) if hg is not None else None
    return AuditResult(t.attrs(g, AUDIT_KINDS, others=True), hessian)
