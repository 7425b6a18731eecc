"""DualAdam and InvAdam optimizers (Jin et al., "DualAdam", Algorithm 1) for PyTorch.

>>> import torch
>>> from dualadam import DualAdam
>>> w = torch.nn.Parameter(torch.ones(3))
>>> opt = DualAdam([w], lr=1e-2, switch_rate=8e-5)
>>> w.grad = torch.tensor([1.0, -2.0, 0.5])
>>> opt.step()
>>> w.data  # first step, alpha = 1 - 8e-5: almost InvAdam's lr * g * |g|
tensor([0.9900, 1.0400, 0.9975])
"""

from dualadam.optim import DualAdam, InvAdam, switch_alpha, switch_steps

__all__ = ["DualAdam", "InvAdam", "switch_alpha", "switch_steps"]
