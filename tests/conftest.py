"""Test-wide settings."""

import torch

# The models in the tests are tiny: one thread is faster for them, and it keeps the suite from
# oversubscribing CI's two cores (OpenMP threads spin-wait, which makes small kernels crawl when
# another process holds the other core).
torch.set_num_threads(1)
