r"""Flatness audits: several sharpness measures of one checkpoint, side by side.

Raw curvature is not comparable across checkpoints on its own: it moves with the training loss
(a network that fits its data more confidently has larger logits and a different Hessian) and with
the parametrisation (Dinh et al. 2017: rescaling consecutive ReLU layers by α and 1/α changes the
Hessian arbitrarily without changing the function). So an audit reports, for each checkpoint,

- the top Hessian eigenvalues and the trace (± 95 % CI), and the SLQ density's negative mass and
  spread (:mod:`landscape_cli.hessian`);
- the **1-D sharpness**: the largest loss increase within a filter-normalised radius ε along a few
  random directions (Li et al. 2018 directions; :mod:`landscape_cli.scan`);
- the **adaptive worst-case sharpness** of Andriushchenko et al. 2023 ("A Modern Look at the
  Relationship between Sharpness and Generalization", eq. (1), :math:`\ell_2` adaptive):

  .. math::

      S_\rho(w) = \max_{\|\delta \oslash |w|\|_2 \le \rho} L(w+\delta) - L(w),

  approximated by a few steps of projected, normalised gradient ascent on :math:`u=\delta\oslash|w|`
  (the gradient with respect to :math:`u` is :math:`|w|\odot\nabla L`). It is invariant to the
  layer rescalings above, which λmax is not;
- next to them the training loss and the parameter norm, which raw curvature moves with.

``match_loss`` (``--match-loss``) divides each model's logits by a temperature chosen so that all
checkpoints have the same training loss (the largest of theirs; the predictions do not change),
then measures again: differences that survive it are not just a difference in confidence.

The package's modules:

- :mod:`~landscape_cli.audit.sharpness`: the sharpness measures (1-D, adaptive), the temperature
  of ``--match-loss``, the parameter norm and the SLQ density's shape;
- :mod:`~landscape_cli.audit.reuse`: the Hessian measures, read back from a ``/hessian`` that
  covers them or computed;
- :mod:`~landscape_cli.audit.measures`: :class:`AuditSettings`, :func:`measure` and what it
  returns (:class:`Measures`, :class:`Measurement`), and :class:`AuditRow`;
- :mod:`~landscape_cli.audit.ranking`: each measure's uncertainty, ranks with ties, and the pairs
  the measures disagree on.

Every public name is importable from ``landscape_cli.audit`` itself.
"""

from landscape_cli.audit.measures import (
    MATCHED_KEYS,
    AuditRow,
    AuditSettings,
    Measurement,
    Measures,
    measure,
)
from landscape_cli.audit.ranking import (
    MEASURES,
    UNCERTAINTY,
    UNCERTAINTY_FIELDS,
    disagreements,
    ranking,
    ranks,
    tied,
    uncertainty,
)
from landscape_cli.audit.sharpness import (
    NEGATIVE_TAU,
    SHARPNESS_1D_POINTS,
    DensityShape,
    Tempered,
    adaptive_sharpness,
    adaptive_sharpness_restarts,
    density_shape,
    parameter_norm,
    sharpness_1d,
    sharpness_1d_directions,
    spread,
    temperature_for_loss,
)

__all__ = [
    "MATCHED_KEYS",
    "MEASURES",
    "NEGATIVE_TAU",
    "SHARPNESS_1D_POINTS",
    "UNCERTAINTY",
    "UNCERTAINTY_FIELDS",
    "AuditRow",
    "AuditSettings",
    "DensityShape",
    "Measurement",
    "Measures",
    "Tempered",
    "adaptive_sharpness",
    "adaptive_sharpness_restarts",
    "density_shape",
    "disagreements",
    "measure",
    "parameter_norm",
    "ranking",
    "ranks",
    "sharpness_1d",
    "sharpness_1d_directions",
    "spread",
    "temperature_for_loss",
    "tied",
    "uncertainty",
]
