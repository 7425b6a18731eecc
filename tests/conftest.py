"""Test-wide settings and the shared fixtures: the trained checkpoints (trained once per session
for each configuration) and each module's own copy of one (``ckpt``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

# The models in the tests are tiny: one thread is faster for them, and it keeps the suite from
# oversubscribing CI's two cores (OpenMP threads spin-wait, which makes small kernels crawl when
# another process holds the other core).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """``trained_checkpoint(config, into=None, name=None) -> Path``: a checkpoint trained with
    ``config`` (a ``TrainConfig``), trained once per session for each distinct configuration.

    Without ``into`` it returns the shared file, which tests must only read; with ``into`` (a
    folder) it returns a copy there (named ``name``, default the shared file's name), for tests
    that change the file or write results beside it. Each call leaves torch's global random
    state as training left it, so a module sees the same random numbers whether it trained the
    checkpoint or another module did.
    """
    from landscape_cli.training import train

    made: dict[str, tuple[Path, torch.Tensor]] = {}

    def get(config, into: Path | None = None, name: str | None = None) -> Path:
        key = repr(config)  # a frozen dataclass: its repr names every field
        if key not in made:
            path = tmp_path_factory.mktemp("trained") / f"{config.model}.pt"
            train(config, out=path)
            made[key] = path, torch.get_rng_state()
        path, rng = made[key]
        torch.set_rng_state(rng)
        if into is None:
            return path
        copy = Path(into) / (name or path.name)
        shutil.copyfile(path, copy)
        return copy

    return get


@pytest.fixture(scope="module")
def ckpt(request, tmp_path_factory, trained_checkpoint) -> Path:
    """The module's own copy of a trained checkpoint, ``<model>.pt`` alone in a folder, so that
    the module's tests may write results beside it.

    It is trained with the module's ``CKPT`` (a ``TrainConfig``); in a module without one, it is
    the smallest: an MLP with 4 hidden units, one epoch.
    """
    from landscape_cli.training import TrainConfig

    config = getattr(request.module, "CKPT", None)
    if config is None:
        config = TrainConfig(model="mlp", model_options={"hidden": [4]}, epochs=1)
    return trained_checkpoint(config, into=tmp_path_factory.mktemp("ckpt"))
