"""The ``>>>`` examples in the dualadam package run as doctests."""

import doctest

import pytest

import dualadam
import dualadam.optim


@pytest.mark.parametrize("module", [dualadam, dualadam.optim], ids=lambda m: m.__name__)
def test_dualadam_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{module.__name__} has no doctest examples"
    assert result.failed == 0
