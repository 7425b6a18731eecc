"""DualAdam/InvAdam against a NumPy float64 transcription of Algorithm 1 and against torch.optim."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from cases import DEVICES

from dualadam import DualAdam, InvAdam, switch_alpha, switch_steps


def reference_dual_adam(
    theta0: list[np.ndarray],
    grad_fn,
    n_steps: int,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    switch_rate: float,
    weight_decay: float = 0.0,
    decoupled: bool = True,
    maximize: bool = False,
) -> list[np.ndarray]:
    """Algorithm 1 of the paper, line by line, in NumPy float64 (weight decay as in torch.optim)."""
    beta1, beta2 = betas
    theta = [t.astype(np.float64).copy() for t in theta0]
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    for t in range(1, n_steps + 1):
        grads = grad_fn(theta)
        for i, g in enumerate(grads):
            g = -g if maximize else g
            if weight_decay:
                if decoupled:
                    theta[i] = theta[i] * (1 - lr * weight_decay)
                else:
                    g = g + weight_decay * theta[i]
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            alpha = max(0.0, 1 - t * switch_rate)
            u = m_hat / (np.sqrt(v_hat) + eps)
            u_tilde = m_hat * np.sqrt(v_hat)
            u_bar = alpha * u_tilde + (1 - alpha) * u
            theta[i] = theta[i] - lr * u_bar
    return theta


# A small non-quadratic problem: f(a, b) = sum(sin(a) * a^2) + sum((b @ c)^2) / 2 + 0.1 sum(b^3).
_C = np.random.default_rng(1).normal(size=(4, 3))


def _loss_torch(params: list[torch.Tensor]) -> torch.Tensor:
    a, b = params
    c = torch.as_tensor(_C, device=a.device)
    return (torch.sin(a) * a**2).sum() + 0.5 * ((b @ c) ** 2).sum() + 0.1 * (b**3).sum()


def _grad_numpy(theta: list[np.ndarray]) -> list[np.ndarray]:
    a, b = theta
    ga = np.cos(a) * a**2 + 2 * a * np.sin(a)
    gb = (b @ _C) @ _C.T + 0.3 * b**2
    return [ga, gb]


def _theta0() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(5,)), rng.normal(size=(2, 4))]


def _run_torch(opt_factory, n_steps: int, groups=None, sign: float = 1.0, device="cpu"):
    """Run an optimizer on ``sign * f`` on ``device``; ``sign=-1`` with ``maximize=True`` descends
    f too. Returns the parameters as NumPy arrays, and the optimizer."""
    params = [
        torch.tensor(t, dtype=torch.float64, device=device, requires_grad=True) for t in _theta0()
    ]
    opt = opt_factory(groups(params) if groups else params)
    for _ in range(n_steps):
        opt.zero_grad()
        (sign * _loss_torch(params)).backward()
        opt.step()
    return [p.detach().cpu().numpy() for p in params], opt


SETTINGS = [
    pytest.param({}, id="plain"),
    pytest.param({"weight_decay": 0.05}, id="decoupled-wd"),
    pytest.param({"weight_decay": 0.05, "decoupled": False}, id="l2-wd"),
    pytest.param({"maximize": True}, id="maximize"),
    pytest.param({"weight_decay": 0.02, "decoupled": False, "maximize": True}, id="l2-maximize"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_matches_numpy_reference_across_the_switch(setting, foreach, device):
    # ξ = 1/30: α goes 1 → 0 over the first 30 of 60 steps, so both phases are covered.
    lr, betas, eps, xi, n = 0.01, (0.9, 0.99), 1e-8, 1 / 30, 60
    maximize = setting.get("maximize", False)
    sign = -1.0 if maximize else 1.0  # maximize -f: a bounded run that still tests the flag
    got, _ = _run_torch(
        lambda p: DualAdam(
            p,
            lr=lr,
            betas=betas,
            eps=eps,
            switch_rate=xi,
            weight_decay=setting.get("weight_decay", 0.0),
            decoupled_weight_decay=setting.get("decoupled", True),
            maximize=maximize,
            foreach=foreach,
        ),
        n,
        sign=sign,
        device=device,
    )
    want = reference_dual_adam(
        _theta0(),
        lambda th: [sign * g for g in _grad_numpy(th)],
        n,
        lr=lr,
        betas=betas,
        eps=eps,
        switch_rate=xi,
        **setting,
    )
    assert switch_alpha(n, xi) == 0.0 < switch_alpha(1, xi)
    for g, w in zip(got, want, strict=True):
        assert np.isfinite(w).all()
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    # The trajectory really moved (a wrong kernel could not pass by standing still).
    assert max(np.abs(g - t0).max() for g, t0 in zip(got, _theta0(), strict=True)) > 1e-2


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_param_groups_carry_their_own_switch_rate(foreach):
    lr, betas, eps, n = 0.02, (0.8, 0.95), 1e-6, 55
    rates = (0.05, 0.0)  # group 0 switches to Adam at step 20; group 1 is pure InvAdam

    def groups(params):
        return [
            {"params": [params[0]], "switch_rate": rates[0]},
            {"params": [params[1]], "switch_rate": rates[1], "lr": lr / 2},
        ]

    got, _ = _run_torch(
        lambda g: DualAdam(g, lr=lr, betas=betas, eps=eps, foreach=foreach), n, groups=groups
    )
    full = [
        reference_dual_adam(_theta0(), _grad_numpy, n, lr=glr, betas=betas, eps=eps, switch_rate=xi)
        for glr, xi in ((lr, rates[0]), (lr / 2, rates[1]))
    ]
    # The parameters are coupled only through the loss, which is separable in a and b.
    np.testing.assert_allclose(got[0], full[0][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got[1], full[1][1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_invadam_is_alpha_one(foreach):
    n = 40
    got, _ = _run_torch(lambda p: InvAdam(p, lr=0.01, foreach=foreach), n)
    want = reference_dual_adam(
        _theta0(), _grad_numpy, n, lr=0.01, betas=(0.9, 0.999), eps=1e-8, switch_rate=0.0
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(
    ("weight_decay", "decoupled"), [(0.0, True), (0.1, True), (0.1, False)], ids=["none", "W", "L2"]
)
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_switch_rate_one_is_torch_adam(foreach, weight_decay, decoupled, maximize, device):
    kw = {"lr": 0.03, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": weight_decay}
    kw["maximize"] = maximize
    sign = -1.0 if maximize else 1.0
    ours, _ = _run_torch(
        lambda p: DualAdam(
            p, switch_rate=1.0, decoupled_weight_decay=decoupled, foreach=foreach, **kw
        ),
        50,
        sign=sign,
        device=device,
    )
    reference = torch.optim.AdamW if decoupled and weight_decay else torch.optim.Adam
    theirs, _ = _run_torch(
        lambda p: reference(p, foreach=foreach, **kw), 50, sign=sign, device=device
    )
    for a, b, t0 in zip(ours, theirs, _theta0(), strict=True):
        assert np.isfinite(b).all() and np.abs(b - t0).max() > 1e-2
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
def test_foreach_matches_for_loop_bit_for_bit(device):
    def make(foreach):
        return lambda p: DualAdam(p, lr=0.01, switch_rate=0.03, weight_decay=0.01, foreach=foreach)

    a, opt_a = _run_torch(make(False), 50, device=device)
    b, opt_b = _run_torch(make(True), 50, device=device)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    for k in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[k][name], sb[k][name])


def test_float32_foreach_close_to_for_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    opts = [
        DualAdam(m.parameters(), lr=0.01, switch_rate=0.05, foreach=f)
        for m, f in ((model, False), (twin, True))
    ]
    for _ in range(30):
        for m, o in zip((model, twin), opts, strict=True):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_state_dict_round_trip_mid_switch_is_bit_exact(foreach):
    def factory(p):
        return DualAdam(p, lr=0.01, switch_rate=1 / 40, weight_decay=0.01, foreach=foreach)

    uninterrupted, _ = _run_torch(factory, 60)

    params = [torch.tensor(t, dtype=torch.float64, requires_grad=True) for t in _theta0()]
    opt = factory(params)
    for _ in range(25):  # α = 1 - 25/40 > 0: the switch is under way
        opt.zero_grad()
        _loss_torch(params).backward()
        opt.step()
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    resumed = [p.clone().requires_grad_(True) for p in saved["params"]]
    opt2 = factory(resumed)
    opt2.load_state_dict(saved["opt"])
    assert opt2.state[resumed[0]]["step"].item() == 25
    for _ in range(35):
        opt2.zero_grad()
        _loss_torch(resumed).backward()
        opt2.step()
    for a, b in zip(uninterrupted, resumed, strict=True):
        np.testing.assert_array_equal(a, b.detach().numpy())


def test_old_state_with_python_int_step_loads():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = DualAdam([p], lr=0.1, switch_rate=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["step"] = 1  # as written by optimizers that keep a Python int
    opt2 = DualAdam([p], lr=0.1, switch_rate=0.1)
    opt2.load_state_dict(sd)
    opt2.step()
    assert opt2.state[p]["step"].item() == 2


def test_schedule_helpers():
    assert switch_alpha(0, 8e-5) == 1.0
    assert switch_alpha(1, 8e-5) == pytest.approx(1 - 8e-5)
    assert switch_alpha(6250, 8e-5) == pytest.approx(0.5)
    assert switch_alpha(12_500, 8e-5) == 0.0
    assert switch_steps(8e-5) == 12_500  # the paper: a complete transition after 12,500 steps
    assert switch_steps(0.0) == math.inf
    assert switch_steps(2.0) == 1
    for xi in (0.3, 1 / 3, 0.07, 1e-3, 8e-5):
        t = switch_steps(xi)
        assert switch_alpha(t, xi) == 0.0 < switch_alpha(t - 1, xi)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1.0}, "learning rate"),
        ({"lr": float("nan")}, "learning rate"),
        ({"eps": -1e-8}, "epsilon"),
        ({"betas": (1.0, 0.999)}, "beta1"),
        ({"betas": (0.9, -0.1)}, "beta2"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"switch_rate": -1e-5}, "switch_rate"),
        ({"switch_rate": float("inf")}, "switch_rate"),
    ],
)
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DualAdam([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_invalid_group_switch_rate_and_invadam_switch_rate():
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="switch_rate"):
        DualAdam([{"params": [p]}, {"params": [q], "switch_rate": -1.0}])
    with pytest.raises(ValueError, match="InvAdam has no switch rate"):
        InvAdam([{"params": [p], "switch_rate": 0.1}])


def test_sparse_gradients_are_refused():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = DualAdam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


def test_closure_and_params_without_grad():
    w = torch.nn.Parameter(torch.tensor([2.0, -1.0], dtype=torch.float64))
    frozen = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = DualAdam([w, frozen], lr=0.1, switch_rate=0.5)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [1] and loss.item() == pytest.approx(5.0)
    assert frozen not in opt.state  # no gradient, no state, no change
    assert torch.equal(frozen.detach(), torch.ones(2, dtype=torch.float64))
    # step 1, α = 0.5: m̂ = g, √v̂ = |g| → Δ = -η (0.5 g|g| + 0.5 g/(|g|+ε))
    g = torch.tensor([4.0, -2.0], dtype=torch.float64)
    want = torch.tensor([2.0, -1.0], dtype=torch.float64) - 0.1 * (
        0.5 * g * g.abs() + 0.5 * g / (g.abs() + 1e-8)
    )
    torch.testing.assert_close(w.detach(), want, rtol=1e-14, atol=0)


def test_complex_parameters_match_their_real_view():
    z = torch.nn.Parameter(torch.tensor([0.6 + 0.3j, -0.5 + 0.1j], dtype=torch.complex128))
    r = torch.nn.Parameter(torch.view_as_real(z.detach()).clone())
    z0 = r.detach().clone()
    oz = DualAdam([z], lr=0.01, switch_rate=0.1)
    orr = DualAdam([r], lr=0.01, switch_rate=0.1)
    for _ in range(15):
        for p, o in ((z, oz), (r, orr)):
            o.zero_grad()
            modulus = p.abs() if p is z else p.pow(2).sum(-1).sqrt()
            (modulus**3).sum().backward()
            o.step()
    assert torch.isfinite(r).all() and (r.detach() - z0).abs().max() > 1e-2
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_minimises_logistic_regression_on_digits_like_adam():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / (x.std(0) + 1e-6), dtype=torch.float32)
    y = torch.tensor(y)

    def train(make_opt) -> float:
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 10)
        opt = make_opt(model.parameters())
        for _ in range(300):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        return torch.nn.functional.cross_entropy(model(x), y).item()

    initial = math.log(10)
    adam = train(lambda p: torch.optim.Adam(p, lr=0.01))
    dual = train(lambda p: DualAdam(p, lr=0.01, switch_rate=1 / 50))
    assert adam < 0.1 * initial
    assert dual < 0.1 * initial
    assert dual < adam * 1.5 + 0.01
