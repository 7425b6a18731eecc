"""What the three jobs share: where a checkpoint's samples and results file come from.

A job loads a checkpoint and its samples with :func:`landscape_cli.workload.load_workload` from the
:class:`~landscape_cli.workload.Source` it is given; :func:`results_path`, :func:`provenance`,
:func:`group_attrs` and :func:`check_same_options` are the results-file policy every job follows
(the file's place, its root attributes, what each group records, and the refusal of a group
computed with other options).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from landscape_cli import distributed
from landscape_cli.checkpoints import sha256
from landscape_cli.errors import LandscapeError
from landscape_cli.params import frozen_note
from landscape_cli.results import group_settings, read_root, settings_mismatch
from landscape_cli.workload import Source, Workload

if TYPE_CHECKING:
    from landscape_cli.params import SelectedParams


def results_path(checkpoint: Path, out: Path | None) -> Path:
    """The results path ``--out``, by default beside the checkpoint with suffix ``.h5``.

    ``--out``, by default the checkpoint's path with its suffix replaced by ``.h5`` (for a
    model folder: ``FOLDER.h5`` beside it).
    """
    if out is not None:
        return Path(out)
    path = Path(checkpoint)
    return path.with_name(path.name + ".h5") if path.is_dir() else path.with_suffix(".h5")


def provenance(
    checkpoint: Path, work: Workload, label: str | None, out: Path | None = None
) -> dict[str, Any]:
    """Root attributes of a results file: what was measured, on what, by which tools.

    Without ``label``, a label already in the results file ``out`` is kept (None is not
    written); a new file gets the checkpoint's stem.
    """
    if label is None and not (out is not None and out.exists() and read_root(out).get("label")):
        label = Path(checkpoint).name if Path(checkpoint).is_dir() else Path(checkpoint).stem
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256(checkpoint),
        "label": label,
        "model": work.loaded.model_spec["name"],
        "dataset": work.dataset,
        "state_dict_prefix": work.loaded.prefix or None,  # removed from the file's keys
        "argv": " ".join(sys.argv),
        "torch_version": str(torch.__version__),
        "cuda_version": torch.version.cuda or "",
    }


def group_attrs(root: dict[str, Any], work: Workload, settings: dict[str, Any]) -> dict[str, Any]:
    """What every results group records.

    The checkpoint's and the samples' SHA-256 and the settings it was computed with (so that a later
    run can tell whether it may reuse, resume or must refuse it).
    """
    return {
        "checkpoint_sha256": root["checkpoint_sha256"],
        "samples_sha256": work.samples_sha256,
        "settings": settings,
    }


def check_same_options(
    out_path: Path, group: str, wanted: dict[str, Any], overwrite: bool, what: str
) -> None:
    """Refuse a group computed with other options, unless ``overwrite`` (one rule for all).

    The same command with the same options recomputes (or resumes) it in place; other options on an
    existing group is an error unless ``overwrite``.
    """
    if overwrite:
        return
    diff = settings_mismatch(group_settings(out_path, group), wanted)
    if diff:
        raise LandscapeError(
            f"/{group} in {out_path} was computed with other options ({'; '.join(diff[:3])}); "
            f"pass `overwrite=True` to replace it{what}"
        )


def check_all(checks: list[tuple[bool, str]]) -> None:
    """Refuse with the message of the first ``(ok, message)`` that is not ok."""
    for ok, message in checks:
        if not ok:
            raise LandscapeError(message)


def results_file_bytes(out_path: Path, new: int) -> int:
    """The disk space a rewrite of ``out_path`` with ``new`` more bytes of data takes."""
    try:
        existing = out_path.stat().st_size
    except OSError:
        existing = 0
    return existing + int(new) + 16 * 1024  # HDF5's own metadata and the attributes


def note_frozen(source: Source, chosen: SelectedParams) -> None:
    """Tell ``source.on_note`` (main process) which frozen parameters are left out."""
    text = frozen_note(chosen.skipped, chosen.reasons, chosen.skipped_numel)
    if text and source.on_note is not None and distributed.is_main():
        source.on_note(text)
