r"""The random vectors the estimators draw, each from an explicit :class:`torch.Generator`.

- :func:`rademacher`: independent ±1 entries, :math:`\mathbb{E}[zz^\top]=I` (Hutchinson 1989;
  the minimum-variance probe for :math:`z^\top Hz` among vectors with independent entries).
- :func:`unit_rademacher`: Rademacher columns scaled to unit norm, :math:`\mathbb{E}[vv^\top]=
  I/n`: the SLQ probes (Ubaru, Chen & Saad 2017), drawn column after column so that the p-th
  probe is the same however many are drawn at once.
- :func:`random_unit`: a Gaussian vector scaled to unit norm, i.e. uniform on the sphere
  (also :math:`\mathbb{E}[vv^\top]=I/n`): the Lanczos start vectors.

All are drawn on the CPU in float64 (so a seed gives the same numbers on every device) and
moved to the device afterwards.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rademacher(
    n: int, k: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> Tensor:
    """An (n, k) matrix of independent ±1 entries, on the CPU.

    Args:
        n: Rows (the operator's dimension).
        k: Columns (probes).
        generator: The random stream to draw from.
        dtype: The entries' type (float64 by default; ``torch.int8`` holds the same draw in
            one byte an entry).
    """
    signs = torch.randint(0, 2, (n, k), generator=generator, dtype=torch.int8)
    if dtype == torch.int8:
        return signs.mul_(2).sub_(1)
    return signs.to(dtype) * 2 - 1


def unit_rademacher(n: int, k: int, generator: torch.Generator) -> Tensor:
    """An (n, k) float64 matrix of Rademacher columns divided by √n (unit columns), on the CPU.

    The columns are drawn one after the other, so column p does not depend on ``k``.

    Args:
        n: Rows (the operator's dimension).
        k: Columns (probes).
        generator: The random stream to draw from.
    """
    return torch.cat([rademacher(n, 1, generator) for _ in range(k)], 1) / math.sqrt(n)


def random_unit(
    n: int,
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """A vector uniform on the unit sphere of R^n, drawn on the CPU, moved to ``device``.

    Args:
        n: The dimension.
        generator: The random stream to draw from.
        device: Where the vector goes.
        dtype: Its precision (float64 by default; a float32 Lanczos basis draws its
            replacement rows in float32, a different stream of the same generator).
    """
    v = torch.randn(n, generator=generator, dtype=dtype).to(device)
    return v.div_(torch.linalg.vector_norm(v, dtype=torch.float64).to(dtype))
