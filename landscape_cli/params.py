"""Which parameters a measurement covers: one rule for the operators, the scans and the audit.

A measurement (a curvature operator, a scan direction, an audit's sharpness) covers a subset of
``model.named_parameters()``, always in that order:

- by default the **trainable** parameters (``requires_grad=True``);
- ``include_frozen=True`` adds the **frozen** ones (``requires_grad=False``: a frozen backbone,
  embeddings kept fixed), which are otherwise left out and listed with the reason ``frozen``;
- ``patterns`` (shell-style, :func:`fnmatch.fnmatchcase`, so ``*`` also matches dots:
  ``transformer.h.*.attn.*``) keeps only the parameters whose name matches one of them; the
  others are listed as ``not selected``. A pattern that matches no parameter at all is an error
  that names a few of the names there are.

The curvature operators then also leave out the chosen parameters that receive no gradient from
the loss on the samples (reason ``no gradient``; :mod:`landscape_cli.hessian.operator`). Every
parameter left out is reported with its reason (``skipped_params`` and ``skipped_reasons`` of
``/hessian``), and frozen ones also in one note (:func:`frozen_note`), so that a number never
silently covers less of the model than the user thinks.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from landscape_cli.errors import LandscapeError

#: Why a parameter is left out of a measurement.
FROZEN = "frozen"
NOT_SELECTED = "not selected"
NO_GRADIENT = "no gradient"


@dataclass(frozen=True)
class ParamSelection:
    """What a measurement should cover (see the module docstring).

    Args:
        patterns: shell-style patterns on parameter names; empty: every parameter.
        include_frozen: measure parameters with ``requires_grad=False`` too.
    """

    patterns: tuple[str, ...] = ()
    include_frozen: bool = False

    def under(self, prefix: str) -> ParamSelection:
        """The same selection for the model wrapped as the submodule ``prefix`` of another."""
        return ParamSelection(tuple(prefix + p for p in self.patterns), self.include_frozen)

    def settings(self) -> dict[str, object]:
        """The selection as results-file settings: only what differs from the default.

        ``params`` (the patterns, a list) and ``include_frozen`` (True), so that files written
        before these options existed keep the same settings.
        """
        out: dict[str, object] = {}
        if self.patterns:
            out["params"] = list(self.patterns)
        if self.include_frozen:
            out["include_frozen"] = True
        return out


@dataclass(frozen=True)
class SelectedParams:
    """The outcome of :func:`select_parameters`.

    ``names`` and ``tensors`` are the chosen parameters (the model's own tensors), in model
    order; ``skipped`` the others with ``reasons`` parallel to it and ``skipped_numel`` their
    sizes.
    """

    names: tuple[str, ...]
    tensors: tuple[Tensor, ...]
    skipped: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    skipped_numel: tuple[int, ...] = ()

    @property
    def numel(self) -> int:
        """The number of values the chosen parameters hold."""
        return sum(t.numel() for t in self.tensors)

    def as_dict(self) -> dict[str, Tensor]:
        """The chosen parameters by name."""
        return dict(zip(self.names, self.tensors, strict=True))


def _few(names: Sequence[str], k: int = 4) -> str:
    shown = ", ".join(names[:k])
    return f"{shown}, … ({len(names)} in all)" if len(names) > k else shown


def select_parameters(model: nn.Module, selection: ParamSelection | None = None) -> SelectedParams:
    """The parameters of ``model`` that ``selection`` covers, and the others with their reason.

    Raises:
        LandscapeError: a pattern matches no parameter, or nothing is left to measure.
    """
    sel = selection or ParamSelection()
    named = list(model.named_parameters())
    if not named:
        raise LandscapeError("the model has no parameters")
    all_names = [k for k, _ in named]
    for pattern in sel.patterns:
        if not any(fnmatch.fnmatchcase(k, pattern) for k in all_names):
            raise LandscapeError(
                f"`params` pattern {pattern!r} matches no parameter of the model; its parameters "
                f"are named like {_few(all_names)}"
            )
    names, tensors, skipped, reasons, sizes = [], [], [], [], []
    for k, p in named:
        if sel.patterns and not any(fnmatch.fnmatchcase(k, pat) for pat in sel.patterns):
            reason = NOT_SELECTED
        elif not p.requires_grad and not sel.include_frozen:
            reason = FROZEN
        else:
            names.append(k)
            tensors.append(p)
            continue
        skipped.append(k)
        reasons.append(reason)
        sizes.append(p.numel())
    if not names:
        frozen = [k for k, r in zip(skipped, reasons, strict=True) if r == FROZEN]
        if frozen:
            raise LandscapeError(
                f"every parameter {'the `params` patterns select ' if sel.patterns else ''}is "
                f"frozen (requires_grad=False: {_few(frozen)}); pass `include_frozen=True` to "
                "measure them"
            )
        raise LandscapeError("the model has no trainable parameters")
    return SelectedParams(
        tuple(names), tuple(tensors), tuple(skipped), tuple(reasons), tuple(sizes)
    )


def frozen_note(skipped: Sequence[str], reasons: Sequence[str], numel: Sequence[int]) -> str | None:
    """One line saying which frozen parameters a measurement leaves out (None when none).

    E.g. "2 frozen parameters (requires_grad=False; 704 values) are not measured: 0.weight,
    0.bias; `include_frozen=True` measures them too".
    """
    frozen = [(k, n) for k, r, n in zip(skipped, reasons, numel, strict=True) if r == FROZEN]
    if not frozen:
        return None
    names = [k for k, _ in frozen]
    values = sum(n for _, n in frozen)
    what = "parameter" if len(frozen) == 1 else "parameters"
    return (
        f"{len(frozen)} frozen {what} (requires_grad=False; {values:,} values) "
        f"{'is' if len(frozen) == 1 else 'are'} not measured: {_few(names, 6)}; "
        "`include_frozen=True` measures them too"
    )


@contextlib.contextmanager
def requiring_grad(tensors: Sequence[Tensor]) -> Iterator[None]:
    """Let autograd differentiate with respect to ``tensors`` (frozen ones included) for a while.

    Their ``requires_grad`` flags are put back afterwards, whatever happens.
    """
    flags = [t.requires_grad for t in tensors]
    try:
        for t in tensors:
            t.requires_grad_(True)
        yield
    finally:
        for t, flag in zip(tensors, flags, strict=True):
            t.requires_grad_(flag)
