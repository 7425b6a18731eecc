"""The ``landscape audit`` job: :func:`audit_job` and the settings an ``/audit`` records.

Every checkpoint and its results file is loaded and checked before anything is measured; each is
then measured (:func:`landscape_cli.audit.measure`, reusing a compatible ``/hessian``), with
``match_loss`` again at a common training loss, and each ``/audit`` written. What the audit tells
(its ranking, summary and report) is :mod:`landscape_cli.jobs.audit_report`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape_cli import audit as au
from landscape_cli import distributed, files, interrupts, resources
from landscape_cli.audit import AuditRow, temperature_for_loss
from landscape_cli.devices import resolve_device
from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.hessian import make_report
from landscape_cli.jobs.common import (
    check_all,
    check_same_options,
    provenance,
    results_path,
)
from landscape_cli.jobs.hessian import check_curvature, hessian_file_bytes, measure_settings
from landscape_cli.losses import LOSSES, check_loss_on
from landscape_cli.params import frozen_note, select_parameters
from landscape_cli.precision import precision_name, with_precision
from landscape_cli.results import (
    check_target,
    expect_settings,
    list_groups,
    read_hessian,
    read_root,
    write_audit,
    write_or_rescue,
)
from landscape_cli.workload import Source, Workload, load_workload

if TYPE_CHECKING:
    import torch

    from landscape_cli.audit import AuditSettings
    from landscape_cli.hessian import HessianReport
    from landscape_cli.results import HessianResult
    from landscape_cli.results.store import Check


def audit_settings(settings: AuditSettings, work: Workload, match_loss: bool) -> dict[str, Any]:
    """The options an ``/audit`` group was computed with (stored as its ``settings``)."""
    options = asdict(settings)
    # The curvature and parameter options only when set: audits made before they existed match.
    for key in ("curvature", "params", "include_frozen"):
        options.pop(key, None)
    options.update(measure_settings(settings.curvature, settings.selection))
    return {
        **options,
        "match_loss": match_loss,
        "dataset": work.dataset,
        "split": work.split,
        "samples": work.samples,
        "samples_sha256": work.samples_sha256,
    }


@dataclass(frozen=True)
class _Audited:
    """A checkpoint the audit measures, once it passed its checks.

    Its results file, samples, provenance and the settings its ``/audit`` records.
    """

    checkpoint: Path
    path: Path
    work: Workload
    root: dict[str, Any]
    wanted: dict[str, Any]


@with_precision
def audit_job(
    checkpoints: list[Path],
    settings: AuditSettings,
    *,
    source: Source = Source(),
    match_loss: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    on_phase: Callable[[str, int, str], None] | None = None,
    on_advance: Callable[[int], None] | None = None,
    allow_tf32: bool = False,
) -> tuple[list[AuditRow], list[Workload]]:
    """Run ``landscape audit``.

    Measure each checkpoint (and, with ``match_loss``, again at a common training loss) and write
    its ``/audit``; returns ``(rows, workloads)``.

    Hessian measures come from the checkpoint's ``/hessian`` when it is compatible
    (:meth:`landscape_cli.results.HessianResult.covers`); otherwise the audit computes them and
    stores them in ``/audit/hessian``: an audit never replaces a ``/hessian``. With ``match_loss``,
    the checkpoint whose loss is the target (temperature 1) keeps its unmatched measures instead of
    measuring them again. Every results file is checked before anything is computed.

    Progress: ``on_phase(name, most work, unit)`` before each phase of each checkpoint (its
    name says which checkpoint, ``i/N``, and which measure) and ``on_advance(k)`` as work is done;
    the first phase starts only once every checkpoint and results file passed its checks. It runs
    in IEEE float32 unless ``allow_tf32`` (:mod:`landscape_cli.precision`), recorded as
    ``/audit``'s ``float32_precision``; an exact audit never reuses a ``/hessian`` made with TF32.
    """
    _check_audit_settings(checkpoints, settings)
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    settings, targets = _audit_targets(  # the settings with the loss resolved
        checkpoints, settings, source, match_loss, dev, overwrite, allow_tf32=allow_tf32
    )

    def phases(what: str) -> Callable[[str, int, str], None] | None:
        if on_phase is None:
            return None
        return lambda name, most, unit: on_phase(f"{what}: {name}", most, unit)

    rows, reports = [], []
    for i, audited in enumerate(targets, 1):
        where = phases(f"checkpoint {i}/{len(targets)} {audited.checkpoint.name}")
        row, report = _audit_one(
            audited, settings, dev, overwrite, where, on_advance, allow_tf32=allow_tf32
        )
        rows.append(row)
        reports.append(report)
    if match_loss:
        rows = _match_losses(rows, targets, settings, dev, phases, on_advance)
    with interrupts.deferred():  # a signal now waits until the measures are written
        _write_audits(rows, targets, reports, settings, overwrite, precision_name(allow_tf32))
    return rows, [audited.work for audited in targets]


def _check_audit_settings(checkpoints: list[Path], settings: AuditSettings) -> None:
    """Refuse an empty audit or inconsistent measure settings before anything is loaded."""
    check_all(
        [
            (len(checkpoints) >= 1, "give at least one checkpoint"),
        ]
    )
    if settings.loss != "":  # "": the checkpoints' own training loss
        check_choice("loss", settings.loss, LOSSES)
    check_all(
        [
            (settings.top_k >= 1, "`top_k` must be >= 1"),
            (settings.tol > 0, "`tol` must be > 0"),
            (settings.max_steps >= 1, "`max_steps` must be >= 1"),
            (
                settings.top_k <= settings.max_steps,
                f"`top_k={settings.top_k}` needs at least as many Lanczos steps: raise `max_steps` "
                f"(now {settings.max_steps}) or lower `top_k`",
            ),
            (settings.epsilon > 0 and settings.rho > 0, "`epsilon` and `rho` must be > 0"),
            (0 <= settings.tau < 1, "`tau` must be in [0, 1)"),
        ]
    )
    check_curvature(settings.curvature, bn_mode="eval")
    resources.check_fields(settings)  # every count, radius, tolerance and the seed in its domain


def _audit_targets(
    checkpoints: list[Path],
    settings: AuditSettings,
    source: Source,
    match_loss: bool,
    dev: torch.device,
    overwrite: bool,
    allow_tf32: bool = False,
) -> tuple[AuditSettings, list[_Audited]]:
    """Load and check every checkpoint before any measuring.

    Load every checkpoint and check it, its loss, its size and its results file, before any
    measuring; returns the settings with the loss resolved, and the checked checkpoints.
    """
    paths = [results_path(ck, None) for ck in checkpoints]
    for path in paths:
        check_target(path)
    works = [load_workload(ck, source, sample_sets=settings.sample_sets) for ck in checkpoints]
    if not settings.loss:  # the checkpoints' own training loss
        losses = {work.resolve_loss(None) for work in works}
        if len(losses) > 1:
            raise LandscapeError(
                "the checkpoints were trained with different losses "
                f"({', '.join(sorted(losses))}); pass `loss` to audit them alike"
            )
        settings = replace(settings, loss=losses.pop())
    if match_loss and settings.loss != "ce":
        raise LandscapeError("`match_loss=True` needs `loss='ce'`")
    chosen = []
    for ck, work in zip(checkpoints, works, strict=True):
        check_loss_on(work.model, work.batches, settings.loss)
        chosen.append(select_parameters(work.model, settings.selection))
        n = chosen[-1].numel
        if settings.top_k > n:
            raise LandscapeError(f"`top_k={settings.top_k}` exceeds the {n} parameters of {ck}")
        resources.require(resources.hessian_bytes(settings.hessian(), n, device=dev), dev)
        path = results_path(ck, None)
        tensors = sum(1 for p in work.model.parameters() if p.requires_grad)
        files.require_space(
            path, hessian_file_bytes(path, settings.hessian(), n, tensors), "results file"
        )
    way_out = "move or rename the checkpoint, or pass `overwrite=True` to drop them"
    targets = []
    for ck, path, work in zip(checkpoints, paths, works, strict=True):
        root = provenance(ck, work, None, path)
        check_target(path, root["checkpoint_sha256"], drop_foreign=overwrite, way_out=way_out)
        want = audit_settings(settings, work, match_loss)
        if allow_tf32:  # files written before TF32 was a choice record none
            want["allow_tf32"] = True
        check_same_options(path, "audit", want, overwrite, "")
        targets.append(_Audited(ck, path, work, root, want))
    for ck, selected in zip(checkpoints, chosen, strict=True):
        text = frozen_note(selected.skipped, selected.reasons, selected.skipped_numel)
        if text and source.on_note is not None and distributed.is_main():
            source.on_note(f"{Path(ck).name}: {text}")
    return settings, targets


def _reusable_hessian(
    audited: _Audited, settings: AuditSettings, overwrite: bool, allow_tf32: bool = False
) -> HessianResult | None:
    """The checkpoint's ``/hessian`` read back when the audit may reuse it, else None."""
    if not audited.path.exists() or (overwrite and _foreign_file(audited.path, audited.root)):
        return None
    if "hessian" not in list_groups(audited.path):
        return None
    stored_hessian = read_hessian(audited.path)
    work = audited.work
    ok = stored_hessian.covers(
        settings,
        samples_sha256=work.samples_sha256,
        split=work.split,
        dataset=work.dataset,
        allow_tf32=allow_tf32,
        set_hashes=[one.samples_sha256 for one in work.sets],
    )
    return stored_hessian if ok else None


def _audit_one(
    audited: _Audited,
    settings: AuditSettings,
    dev: torch.device,
    overwrite: bool,
    on_phase: Callable[[str, int, str], None] | None,
    on_advance: Callable[[int], None] | None,
    allow_tf32: bool = False,
) -> tuple[AuditRow, HessianReport | None]:
    """Measure one checkpoint.

    Its :class:`AuditRow`, and the report of the Hessian measures it computed (None when it reused
    ``/hessian``).
    """
    t0 = time.perf_counter()
    stored = _reusable_hessian(audited, settings, overwrite, allow_tf32)
    measured = au.measure(
        audited.work.model,
        audited.work.batches,
        settings,
        device=dev,
        stored=stored,
        on_phase=on_phase,
        on_advance=on_advance,
        sets=[(one.batches, one.samples_sha256) for one in audited.work.sets],
        samples_sha256=audited.work.samples_sha256,
    )
    report = None
    if measured.analysis is not None:
        report = make_report(
            measured.operator,
            measured.analysis,
            settings.hessian(),
            samples=audited.work.samples,
            batch_size=audited.work.batch_size,
            split=audited.work.split,
            loss=settings.loss,
            seconds=time.perf_counter() - t0,
        )
    source = "hessian" if stored is not None else "audit/hessian"
    return AuditRow(str(audited.checkpoint), str(audited.path), measured.measures, source), report


def _match_losses(
    rows: list[AuditRow],
    targets: list[_Audited],
    settings: AuditSettings,
    dev: torch.device,
    phases: Callable[[str], Callable[[str, int, str], None] | None],
    on_advance: Callable[[int], None] | None,
) -> list[AuditRow]:
    """Measure the rows again at a common training loss (``--match-loss``).

    Each row with its measures at the group's largest training loss (its logits tempered to it; the
    checkpoint already there keeps its own measures).
    """
    ref = max(range(len(rows)), key=lambda i: rows[i].measures.train_loss)
    target = rows[ref].measures.train_loss
    out = []
    for i, (row, audited) in enumerate(zip(rows, targets, strict=True)):
        work = audited.work
        temp = 1.0 if i == ref else temperature_for_loss(work.model, work.batches, target)
        if temp == 1.0:  # already at the target loss: the unmatched measures are these
            out.append(replace(row, matched=row.measures))
            continue
        measured = au.measure(
            work.model,
            work.batches,
            settings,
            device=dev,
            temperature=temp,
            density=False,
            on_phase=phases(
                f"checkpoint {i + 1}/{len(rows)} {Path(row.checkpoint).name} at matched loss"
            ),
            on_advance=on_advance,
        ).measures
        hvps = row.measures.hvp_count + measured.hvp_count
        out.append(replace(row, measures=replace(row.measures, hvp_count=hvps), matched=measured))
    return out


def _write_audits(
    rows: list[AuditRow],
    targets: list[_Audited],
    reports: list[HessianReport | None],
    settings: AuditSettings,
    overwrite: bool,
    precision: str = "ieee",
) -> None:
    """Write each row to its checkpoint's ``/audit`` (rank 0 only).

    A failed write is raised once the other checkpoints' results are written.
    """
    if not distributed.is_main():
        return
    failures: list[LandscapeError] = []
    for row, audited, report in zip(rows, targets, reports, strict=True):
        attrs = {
            "checkpoint_sha256": audited.root["checkpoint_sha256"],
            "samples_sha256": audited.wanted["samples_sha256"],
            "settings": audited.wanted,
            "samples": audited.wanted["samples"],
            "epsilon": settings.epsilon,
            "rho": settings.rho,
            "float32_precision": precision,
        }
        stored_row = row.stored()
        way_out = "pass `overwrite=True` to replace it"
        check = None if overwrite else expect_settings("audit", audited.wanted, way_out)

        def write(
            path: Path,
            root: dict[str, Any] = audited.root,
            stored_row: dict[str, Any] = stored_row,
            report: HessianReport | None = report,
            attrs: dict[str, Any] = attrs,
            check: Check | None = check,
        ) -> Path:
            return write_audit(
                path, root, stored_row, hessian=report, attrs=attrs, drop_foreign=overwrite,
                check=check,
            )  # fmt: skip

        try:
            write_or_rescue(row.results, write)
        except LandscapeError as exc:  # write the other checkpoints' results first
            failures.append(exc)
    if failures:
        raise failures[0]


def _foreign_file(path: Path, root: dict[str, Any]) -> bool:
    stored = read_root(path).get("checkpoint_sha256")
    return bool(stored) and stored != root["checkpoint_sha256"]
