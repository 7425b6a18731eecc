r"""DualAdam and InvAdam (Jin et al., "DualAdam", Algorithm 1), as ``torch.optim`` optimizers.

With gradient :math:`g_t`, the moments and their bias corrections are Adam's,

.. math::

    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
    \hat m_t = \frac{m_t}{1-\beta_1^t}, \qquad \hat v_t = \frac{v_t}{1-\beta_2^t}.

Adam's direction (Algorithm 1, line 9) and InvAdam's direction (line 10, eq. (5)) are

.. math::

    u_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \qquad
    \tilde u_t = \hat m_t \odot \sqrt{\hat v_t},

and DualAdam mixes them with a weight that decays linearly in the step count :math:`t` (1 at the
first step) at the switch rate :math:`\xi` (lines 8, 11, 12):

.. math::

    \alpha_t = \max(0,\ 1 - \xi t), \qquad
    \theta_t = \theta_{t-1} - \eta\,\big(\alpha_t \tilde u_t + (1-\alpha_t)\,u_t\big).

**Where ε sits.** Eq. (4) of the paper writes Adam's term as
:math:`\hat m / \sqrt{\hat v + \epsilon}` (ε inside the square root), but Algorithm 1 and the
authors' code use :math:`\hat m / (\sqrt{\hat v} + \epsilon)` (ε outside), which is also what
``torch.optim.Adam`` does.
This module follows Algorithm 1: ε outside the square root. That is what makes DualAdam with
:math:`\alpha \equiv 0` *equal* to ``torch.optim.Adam``.

**InvAdam** is the same update with :math:`\alpha \equiv 1` (switch rate 0): a pure
:math:`\hat m \odot \sqrt{\hat v}` step, which may not converge on its own (paper, §IV-H).

Once :math:`\alpha_t` has reached 0 (from step :math:`\lceil 1/\xi \rceil` on), the step *is* Adam's
and runs exactly Adam's kernels: the InvAdam term is not computed at all.

Weight decay is decoupled (AdamW style, :math:`\theta \leftarrow \theta(1-\eta\lambda)` before the
step) by default, and classic L2 (:math:`g \leftarrow g + \lambda\theta`) when
``decoupled_weight_decay=False``. Both follow ``torch.optim.Adam``'s conventions, including the
order of ``maximize`` (negate the gradient first) and weight decay.

The step counter is kept per parameter in the optimizer state (``state[p]["step"]``, a float64
CPU tensor, exact up to 2**53 steps) and travels with ``state_dict()``, so a run resumed in the
middle of the switch continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["DualAdam", "InvAdam", "switch_alpha", "switch_steps"]


def switch_alpha(step: int | float, switch_rate: float) -> float:
    r"""The InvAdam weight :math:`\alpha_t = \max(0, 1 - \xi t)` of Algorithm 1, line 8.

    Args:
        step: the step count :math:`t` (1 at the first optimizer step; 0 before any step).
        switch_rate: :math:`\xi \ge 0`. ``0`` keeps :math:`\alpha \equiv 1` (InvAdam).

    >>> switch_alpha(1, 0.25), switch_alpha(4, 0.25), switch_alpha(9, 0.25)
    (0.75, 0.0, 0.0)
    """
    return max(0.0, 1.0 - switch_rate * step)


def switch_steps(switch_rate: float) -> float:
    r"""The first step :math:`t` at which :math:`\alpha_t = 0` (pure Adam from then on).

    ``math.inf`` for ``switch_rate == 0`` (InvAdam never switches). For the paper's
    :math:`\xi = 8\times10^{-5}` this is 12,500 steps.
    """
    if switch_rate <= 0:
        return math.inf
    t = max(1, math.ceil(1.0 / switch_rate))
    # Guard against rounding in 1/ξ: return the first t where the schedule really is 0.
    while t > 1 and switch_alpha(t - 1, switch_rate) == 0.0:
        t -= 1
    while switch_alpha(t, switch_rate) > 0.0:
        t += 1
    return t


def _check_hparams(group: dict[str, Any]) -> None:
    lr, eps, (beta1, beta2) = group["lr"], group["eps"], group["betas"]
    checks = [
        (isinstance(lr, (int, float)) and 0.0 <= lr < math.inf, f"Invalid learning rate: {lr!r}"),
        (isinstance(eps, (int, float)) and 0.0 <= eps < math.inf, f"Invalid epsilon: {eps!r}"),
        (0.0 <= beta1 < 1.0, f"Invalid beta1 (betas[0]) {beta1!r}: must be in [0, 1)"),
        (0.0 <= beta2 < 1.0, f"Invalid beta2 (betas[1]) {beta2!r}: must be in [0, 1)"),
        (
            0.0 <= group["weight_decay"] < math.inf,
            f"Invalid weight_decay: {group['weight_decay']!r}",
        ),
        (
            0.0 <= group["switch_rate"] < math.inf,
            f"Invalid switch_rate {group['switch_rate']!r}: must be a finite number >= 0",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


class DualAdam(Optimizer):
    r"""DualAdam: InvAdam's :math:`\hat m\odot\sqrt{\hat v}` step blended into Adam's.

    Implements Algorithm 1 of Jin et al., "DualAdam" (see the module docstring for the math and
    for why ε sits *outside* the square root although eq. (4) shows it inside).

    Args:
        params: parameters or parameter groups; a group may carry its own ``switch_rate``.
        lr: learning rate :math:`\eta`.
        betas: :math:`(\beta_1, \beta_2)`, the decay rates of the moments.
        eps: :math:`\epsilon`, added to :math:`\sqrt{\hat v}` in Adam's term.
        switch_rate: :math:`\xi`; :math:`\alpha_t = \max(0, 1-\xi t)` is InvAdam's share of the
            step. The paper uses 8e-5 on CIFAR (Adam from step 12,500 on); ``0`` is InvAdam,
            ``>= 1`` is Adam from the first step.
        weight_decay: :math:`\lambda`.
        decoupled_weight_decay: AdamW-style decay (default) instead of L2 on the gradient.
        maximize: maximize the objective instead of minimizing it.
        foreach: use the ``torch._foreach_*`` kernels; ``None`` picks them when every parameter
            is on CUDA. Both paths give the same numbers.

    The InvAdam term uses the raw scale of :math:`\sqrt{\hat v}` (the gradient's RMS), so its
    step is :math:`\eta\,|g|^2`-sized: larger learning rates than Adam's are usual (the authors
    train CIFAR models with ``lr=1e-2``).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        switch_rate: float = 8e-5,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "switch_rate": switch_rate,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
        }
        _check_hparams(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, checking its hyperparameters."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["betas"] = tuple(group["betas"])
        _check_hparams(group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the state, filling in hyperparameters missing from older state dicts."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                step = p_state.get("step")
                if step is not None and not torch.is_tensor(step):
                    p_state["step"] = torch.tensor(float(step), dtype=torch.float64)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
    ) -> bool:
        """Collect the parameters that have gradients; create their state on first use."""
        has_complex = False
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients; "
                    "use torch.optim.SparseAdam for sparse embeddings"
                )
            has_complex |= torch.is_complex(p)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=torch.float64)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            state_steps.append(state["step"])
        return has_complex

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: a closure that re-evaluates the model and returns the loss (optional).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []
            has_complex = self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, state_steps)
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params) and not torch.jit.is_scripting()
            kernel = _multi_tensor_dual_adam if foreach else _single_tensor_dual_adam
            beta1, beta2 = group["betas"]
            kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                state_steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                switch_rate=group["switch_rate"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                maximize=group["maximize"],
                has_complex=has_complex,
            )
        return loss


class InvAdam(DualAdam):
    r"""InvAdam: the step :math:`\theta \leftarrow \theta - \eta\,\hat m\odot\sqrt{\hat v}` (5).

    DualAdam with :math:`\alpha \equiv 1` (switch rate 0). Its steps grow where the gradient's
    second moment is large, which helps it leave sharp minima but can keep it from converging
    (paper, §IV-H); DualAdam hands over to Adam for that reason. Arguments as for
    :class:`DualAdam`, without ``switch_rate``.

    Args:
        params: parameters or parameter groups (a group may not set a nonzero ``switch_rate``).
        lr: learning rate :math:`\eta`.
        betas: :math:`(\beta_1, \beta_2)`, the decay rates of the moments.
        eps: :math:`\epsilon`; it only enters Adam's term, whose weight :math:`1-\alpha` is 0
            here, so it does not change InvAdam's step.
        weight_decay: :math:`\lambda`.
        decoupled_weight_decay: AdamW-style decay (default) instead of L2 on the gradient.
        maximize: maximize the objective instead of minimizing it.
        foreach: use the ``torch._foreach_*`` kernels; ``None`` picks them when every parameter
            is on CUDA.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = InvAdam([w], lr=0.1)
    >>> w.grad = torch.tensor([2.0, -0.5])
    >>> opt.step()
    >>> w.data  # theta - lr * m_hat * sqrt(v_hat) = 1 - 0.1 * g * |g| at the first step
    tensor([0.6000, 1.0250])
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            switch_rate=0.0,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group; InvAdam refuses a nonzero ``switch_rate``."""
        if param_group.get("switch_rate", 0.0) != 0.0:
            raise ValueError(
                "InvAdam has no switch rate (alpha is always 1); use DualAdam for a switch_rate"
            )
        super().add_param_group(param_group)


def _single_tensor_dual_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    switch_rate: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    has_complex: bool,
) -> None:
    """Algorithm 1, one parameter at a time: the readable reference for the foreach path."""
    del has_complex  # handled per tensor below
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(
        params, grads, exp_avgs, exp_avg_sqs, state_steps, strict=True
    ):
        if maximize:
            grad = -grad
        if torch.is_complex(param):
            param, grad = torch.view_as_real(param), torch.view_as_real(grad)
            exp_avg, exp_avg_sq = torch.view_as_real(exp_avg), torch.view_as_real(exp_avg_sq)

        step_t += 1  # line 2: t <- t + 1
        step = step_t.item()

        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)

        # Lines 4-5: the moments (3a), (3b).
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

        # Lines 6-7: bias corrections; m̂ = m / bc1 is folded into the step size.
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        step_size = lr / bias_correction1
        alpha = switch_alpha(step, switch_rate)  # line 8

        sqrt_v_hat = exp_avg_sq.sqrt().div_(bias_correction2_sqrt)
        if alpha > 0:
            # Line 10, weighted by α: θ -= η α m̂ ⊙ √v̂.
            param.addcmul_(exp_avg, sqrt_v_hat, value=-step_size * alpha)
        # Line 9, weighted by 1 - α: θ -= η (1 - α) m̂ / (√v̂ + ε). With α = 0 this is Adam's step.
        param.addcdiv_(exp_avg, sqrt_v_hat.add_(eps), value=-step_size * (1 - alpha))


def _group_by_device_and_dtype(
    *tensor_lists: list[Tensor],
) -> list[tuple[list[Tensor], ...]]:
    """Split parallel lists of tensors into runs sharing a device and dtype (foreach needs it)."""
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, p in enumerate(tensor_lists[0]):
        buckets[(p.device, p.dtype)].append(i)
    return [tuple([lst[i] for i in idx] for lst in tensor_lists) for idx in buckets.values()]


def _foreach_moments(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    beta1: float,
    beta2: float,
    decay: tuple[float, float, bool],
) -> None:
    """Weight decay, then the moments m ← β₁m + (1−β₁)g and v ← β₂v + (1−β₂)g², in place.

    ``decay`` is ``(lr, weight_decay, decoupled)``: decoupled decay shrinks the parameters by
    ``1 − lr·weight_decay``; coupled decay adds ``weight_decay·θ`` to the gradients (a copy).
    """
    lr, weight_decay, decoupled = decay
    if weight_decay != 0:
        if decoupled:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)


def _multi_tensor_dual_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    switch_rate: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    has_complex: bool,
) -> None:
    """Algorithm 1 with ``torch._foreach_*`` kernels; the same arithmetic as the for-loop."""
    grouped = _group_by_device_and_dtype(params, grads, exp_avgs, exp_avg_sqs, state_steps)
    for d_params, d_grads, d_exp_avgs, d_exp_avg_sqs, d_steps in grouped:
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        if has_complex:
            d_params, d_grads, d_exp_avgs, d_exp_avg_sqs = (
                [torch.view_as_real(t) if torch.is_complex(t) else t for t in lst]
                for lst in (d_params, d_grads, d_exp_avgs, d_exp_avg_sqs)
            )

        torch._foreach_add_(d_steps, 1)
        steps = [s.item() for s in d_steps]

        decay = (lr, weight_decay, decoupled_weight_decay)
        _foreach_moments(d_params, d_grads, d_exp_avgs, d_exp_avg_sqs, beta1, beta2, decay)

        step_sizes = [lr / (1 - beta1**s) for s in steps]
        alphas = [switch_alpha(s, switch_rate) for s in steps]
        sqrt_v_hat = torch._foreach_sqrt(d_exp_avg_sqs)
        torch._foreach_div_(sqrt_v_hat, [math.sqrt(1 - beta2**s) for s in steps])

        live = [i for i, a in enumerate(alphas) if a > 0]
        if live:  # the InvAdam term; skipped entirely once every α has reached 0
            torch._foreach_addcmul_(
                [d_params[i] for i in live],
                [d_exp_avgs[i] for i in live],
                [sqrt_v_hat[i] for i in live],
                [-step_sizes[i] * alphas[i] for i in live],
            )
        torch._foreach_add_(sqrt_v_hat, eps)
        torch._foreach_addcdiv_(
            d_params,
            d_exp_avgs,
            sqrt_v_hat,
            [-step_size * (1 - a) for step_size, a in zip(step_sizes, alphas, strict=True)],
        )
