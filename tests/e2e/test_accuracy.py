"""Training with the defaults (20 epochs), with Adam and with DualAdam, reaches 95 % test
accuracy on the digits."""

from __future__ import annotations

import pytest

from landscape_cli.training import TrainConfig, train


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "dualadam"])
def test_defaults_reach_95_percent_on_digits(tmp_path, optimizer):
    result = train(TrainConfig(optimizer=optimizer), out=tmp_path / "m.pt", device="cpu")
    assert result.final.epoch == 20
    assert result.final.test_acc >= 0.95
