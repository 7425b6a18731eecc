"""What the three jobs share: where a checkpoint's samples and results file come from.

:class:`Source` loads a checkpoint and its samples; :func:`results_path`, :func:`provenance`,
:func:`group_attrs` and :func:`check_same_options` are the results-file policy every job follows
(the file's place, its root attributes, what each group records, and the refusal of a group
computed with other options).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from landscape_cli import distributed, resources
from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.params import frozen_note
from landscape_cli.workload import Workload, load_workload

if TYPE_CHECKING:
    from landscape_cli.params import SelectedParams


@dataclass(frozen=True)
class Source:
    """How to load a checkpoint's model and samples (the shared options of the commands)."""

    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    data_root: str | None = None
    split: str = "train"
    samples: int = 1024
    batch_size: int = 128
    trust: bool = False
    seed: int = 0  # of the sample selection
    text_columns: tuple[str, ...] = ("text",)  # text:FILE data of Hugging Face folders
    label_column: str = "label"
    seq_len: int | None = None  # causal language models: tokens per sequence (or block)
    pack: bool = False  # causal language models: blocks of seq_len tokens, not one per text
    # told what the user should know about how a file was read (a prefix removed from its keys)
    on_note: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    def note(self, loaded: Any) -> None:
        """Pass the notes of a :class:`~landscape_cli.checkpoints.LoadedModel` to ``on_note``."""
        if self.on_note is None or not distributed.is_main():
            return
        for text in getattr(loaded, "notes", ()):
            self.on_note(f"{loaded.path.name}: {text}")

    def load(self, checkpoint: Path, sample_sets: int = 1) -> Workload:
        """Load ``checkpoint`` and its samples as a :class:`Workload` with these settings.

        With ``sample_sets`` > 1, also the further disjoint sample sets (``Workload.sets``).
        """
        self.check()
        check_choice("split", self.split, ("train", "test"))
        work = load_workload(
            checkpoint,
            model=self.model,
            model_options=self.model_options,
            dataset=self.dataset,
            data_root=self.data_root,
            split=self.split,
            samples=self.samples,
            batch_size=self.batch_size,
            trust=self.trust,
            seed=self.seed,
            text_columns=self.text_columns,
            label_column=self.label_column,
            sample_sets=sample_sets,
            seq_len=self.seq_len,
            pack=self.pack,
        )
        self.note(work.loaded)
        return work

    def check(self) -> None:
        """The counts and the seed against their domains (:func:`resources.check_options`)."""
        resources.check_options(
            {"samples": self.samples, "batch_size": self.batch_size, "seed": self.seed}
        )


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
    from landscape_cli.checkpoints import sha256
    from landscape_cli.results import read_root

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
    from landscape_cli.results import group_settings, settings_mismatch

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
