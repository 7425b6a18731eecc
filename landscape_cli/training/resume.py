"""The files of a training run: checks before training, snapshots, writes, resuming.

An output path is checked before training (:func:`check_output`) and again under its lock right
before each write (:class:`_Outputs`); a failed write saves the run to a fresh file instead
(:func:`_save_or_fallback`). :func:`_read_resume` reads a checkpoint to go on from and
:func:`_restore` puts its state into the new run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landscape_cli import files
from landscape_cli.checkpoints import (
    FORMAT,
    check_checkpoint,
    check_optimizer_state,
    checkpoint_bytes,
    fit_state_dict,
    read_file,
)
from landscape_cli.errors import LandscapeError, one_line
from landscape_cli.training.config import (
    TrainConfig,
    _check_stored_domains,
    _config_from_checkpoint,
    same_run,
)

if TYPE_CHECKING:
    from landscape_cli.training.loop import _Run


def _holds_same_run(path: Path, config: TrainConfig, any_epochs: bool) -> bool:
    """Whether the existing file ``path`` is a landscape checkpoint of the run ``config``."""
    try:
        obj = read_file(path)
    except LandscapeError:
        return False
    if not (isinstance(obj, Mapping) and obj.get("format") == FORMAT):
        return False
    train = obj.get("train")
    return isinstance(train, Mapping) and same_run(
        train.get("config"), config, any_epochs=any_epochs
    )


def check_output(
    path: Path,
    config: TrainConfig,
    *,
    overwrite: bool = False,
    any_epochs: bool = False,
    what: str = "checkpoint",
) -> None:
    """Check a checkpoint path before training.

    ``path`` must be creatable and writable (:func:`landscape_cli.files.check_output`: a device,
    FIFO, socket or folder is refused even with ``overwrite``), and an existing file there a
    landscape checkpoint of the same run (every setting, :func:`same_run`) unless ``overwrite``.
    """
    if path.is_dir():
        raise LandscapeError(f"`out` {path} is a folder; give a file path such as {path}/run.pt")
    files.check_output(path, what)
    if path.exists() and not overwrite and not _holds_same_run(path, config, any_epochs):
        raise LandscapeError(
            f"the {what} {path} exists and is not a landscape checkpoint of this run (same "
            "settings); refusing to overwrite it (choose another `out`, or pass `overwrite=True`)"
        )


def snapshot_path(out_path: Path, epoch: int) -> Path:
    """The ``save_every`` snapshot of ``epoch``: ``<out stem>-epoch<epoch><out suffix>``."""
    return out_path.with_name(f"{out_path.stem}-epoch{epoch}{out_path.suffix}")


def _snapshots(out_path: Path, first_epoch: int, epochs: int, save_every: int) -> list[Path]:
    """The snapshots a run from ``first_epoch`` to ``epochs`` will write."""
    if not save_every:
        return []
    due = range(first_epoch + 1, epochs + 1)
    return [snapshot_path(out_path, e) for e in due if e % save_every == 0]


def _checkpoint_size(run: _Run) -> int:
    """About the bytes of the run's checkpoint: weights, buffers, optimizer state, history."""
    params = sum(p.numel() * p.element_size() for p in run.model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in run.model.buffers())
    slots = 1 if run.config.optimizer == "sgd" else 2  # momentum; Adam's two moments
    history = 64 * run.config.epochs * 8
    return params * (1 + slots) + buffers + history + 64 * 1024


def _save_or_fallback(path: Path, state: Mapping[str, Any], what: str = "checkpoint") -> None:
    """Save ``state`` to ``path``.

    If that fails after training, save it to a fresh ``<stem>.rescued-<random>.pt``
    (beside ``path``, else in the working or temporary folder), read it back, and name it in
    the error (:func:`landscape_cli.files.save`).
    """
    files.save(path, checkpoint_bytes(state), what=what, product="the trained model")


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a file apart from the one this run wrote: device, inode, size, mtime."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


class _Outputs:
    """The run's checkpoint files, each checked again under its lock right before it is written.

    A file that changed since the checks before training (another process wrote it) is replaced
    only if it is a checkpoint of this run, or with ``overwrite``; otherwise this run's checkpoint
    is rescued to a fresh file and the error says where.
    """

    def __init__(self, config: TrainConfig, paths: list[Path], overwrite: bool) -> None:
        self.config, self.overwrite = config, overwrite
        self.known = {p: _signature(p) for p in paths}

    def save(self, path: Path, state: Mapping[str, Any], what: str = "checkpoint") -> None:
        """Write ``state`` to ``path`` (or rescue it, see the class)."""
        try:
            with files.locked(path, what=what):
                now = _signature(path)
                changed = now is not None and now != self.known.get(path)
                if changed and not self.overwrite and not _holds_same_run(path, self.config, True):
                    raise files.WriteError(
                        f"the {what} {path} was written meanwhile by another run; it was kept "
                        "(pass another `out` to keep both, or `overwrite=True`)"
                    )
                _save_or_fallback(path, state, what)
                self.known[path] = _signature(path)
        except files.WriteError as exc:  # the lock, or the file another run wrote
            try:
                saved = files.rescue_bytes(path, checkpoint_bytes(state), what=what)
            except files.WriteError as again:
                raise LandscapeError(f"{exc}; {again}") from None
            raise LandscapeError(f"{exc}; the trained model was saved to {saved} instead") from None


def _read_resume(
    resume: str | os.PathLike[str], config: TrainConfig, trust: bool
) -> tuple[Mapping[str, Any], TrainConfig]:
    """The checkpoint to resume and the run's config: the stored one, with ``config``'s epochs."""
    ckpt = read_file(resume)
    if not (isinstance(ckpt, Mapping) and ckpt.get("format") == FORMAT):
        raise LandscapeError(f"{resume} is not a landscape training checkpoint; cannot resume")
    for key in ("state_dict", "optimizer", "train"):
        if key not in ckpt:
            raise LandscapeError(
                f"{resume} has no {key!r} entry; it cannot be resumed (start a new run)"
            )
    check_checkpoint(ckpt, resume, resume=True)
    stored = _config_from_checkpoint(
        ckpt, Path(resume), trust=trust, given=(config.model, config.dataset)
    )
    _check_stored_domains(stored, resume)
    if ckpt["optimizer"]["name"] != stored.optimizer.lower():
        raise LandscapeError(
            f"{resume}: its optimizer state was saved by {ckpt['optimizer']['name']!r} but its "
            f"training config names {stored.optimizer!r}: the optimizer does not match its state"
        )
    return ckpt, replace(stored, epochs=config.epochs if config.epochs else stored.epochs)


def _restore(run: _Run, ckpt: Mapping[str, Any], resume: str | os.PathLike[str]) -> None:
    """Put the weights, optimizer state, counters and history of ``ckpt`` into ``run``."""
    fit_state_dict(run.model, ckpt["state_dict"], str(resume))
    check_optimizer_state(run.optimizer, ckpt["optimizer"]["state_dict"], resume)
    try:
        run.optimizer.load_state_dict(ckpt["optimizer"]["state_dict"])
        run.hparams = dict(ckpt["optimizer"]["hparams"])
        for group in run.optimizer.param_groups:  # keep the switch rate the run started with
            if "switch_rate" in run.hparams:
                group["switch_rate"] = run.hparams["switch_rate"]
        run.first_epoch, run.step = int(ckpt["train"]["epoch"]), int(ckpt["train"]["step"])
        run.history = {k: list(v) for k, v in ckpt["train"]["history"].items()}
        float(run.hparams["lr"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        reason = one_line(exc)
        raise LandscapeError(
            f"{resume}: the optimizer or training state does not fit the run "
            f"({type(exc).__name__}: {reason}); it cannot be resumed"
        ) from None
    if run.first_epoch >= run.config.epochs:
        raise LandscapeError(
            f"{resume} already holds {run.first_epoch} epochs; pass `epochs` above that to go on"
        )
