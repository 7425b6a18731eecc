"""Test-wide settings and the shared fixtures: the trained checkpoints (trained once per session
for each configuration), each module's own copy of one (``ckpt``), a training run with its
snapshots (``run``), and the Hessian operators of the tiny models of ``cases.CASES`` with their
exact Hessians (``case``, on each ``device``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from cases import CASES, DEVICES, batches, dense_reference

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


@pytest.fixture(scope="module", params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="module", params=list(CASES))
def case(request, device):
    """(operator on ``device``, exact Hessian on the CPU) for each case of ``CASES``."""
    from landscape_cli.hessian import HessianOperator
    from landscape_cli.losses import LOSSES

    model, x, y, loss = CASES[request.param]()
    H = dense_reference(model, x, y, LOSSES[loss])
    op = HessianOperator(model, batches(x, y, 6), loss=loss, dtype=torch.float64, device=device)
    return op, H


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A training run's folder, for trajectory scans: ``mlp.pt`` (an MLP with 8 hidden units,
    4 epochs) and its snapshots after each epoch, ``snap-10-mlp.pt`` … ``snap-40-mlp.pt``."""
    from landscape_cli.training import TrainConfig, train

    folder = tmp_path_factory.mktemp("trajectory")
    config = TrainConfig(model="mlp", model_options={"hidden": [8]}, epochs=4, seed=0)
    train(config, out=folder / "mlp.pt", save_every=1)
    # the file names alone would order epoch10 before epoch2: the stored epoch orders them
    for epoch in range(1, 5):
        (folder / f"mlp-epoch{epoch}.pt").rename(folder / f"snap-{10 * epoch}-mlp.pt")
    return folder
