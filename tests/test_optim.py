"""MinimalDissipation (torch optimizer) and MinimalDissipationLR (scheduler): the plan, torch's
optimizer contract, the Fisher preconditioner, exact resume, CPU and CUDA."""
import copy
import io
import math

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.errors import InputError
from mindiss.adapters.optim import MinimalDissipation, MinimalDissipationLR, per_chain_grads, plan, rate_factors



pytestmark = pytest.mark.usefixtures("one_thread")


S, MU, T, N_STEPS = 0.5, 1.3, 2.0, 20


def test_plan_is_the_canonical_discretisation():
    harmonic = plan(T, N_STEPS, variance=S, mobility=MU)
    ref = md.schedules.optimal_harmonic(S, MU, T).discretise(N_STEPS)
    assert np.array_equal(harmonic.lr, ref.lr) and np.array_equal(harmonic.dt, ref.dt)
    assert harmonic.n_updates == N_STEPS + 2 and harmonic.is_impulse[0] and harmonic.is_impulse[-1]
    a = plan(T, N_STEPS, tau=S / MU)
    assert np.array_equal(a.lr, md.schedules.alpha(T, S / MU).discretise(N_STEPS).lr)
    # eta* = s alpha(t): the same plan up to rounding
    np.testing.assert_allclose(S * a.lr, harmonic.lr, rtol=1e-13)
    lin = plan(T, N_STEPS, schedule=md.schedules.linear_decay(0.3, T))
    assert lin.lr[0] == 0.0 and lin.lr[-1] == 0.0


def test_sgd_sign_and_rates_per_update():
    theta = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    opt = MinimalDissipation([theta], duration=T, n_steps=N_STEPS, tau=S / MU, lr=0.7)
    rates = plan(T, N_STEPS, tau=S / MU).lr
    assert opt.n_updates == N_STEPS + 2
    g = torch.tensor([1.5, -2.0], dtype=torch.float64)
    for k in range(opt.n_updates):
        before = theta.detach().clone()
        theta.grad = g.clone()
        assert opt.next_move_time == (0.0 if k in (0, N_STEPS + 1) else T / N_STEPS)
        opt.step()
        assert torch.equal(theta.detach(), before - (0.7 * rates[k]) * g)     # p -= lr alpha_k g_hat
        assert opt.last_move_time == (0.0 if k in (0, N_STEPS + 1) else T / N_STEPS)
    with pytest.raises(InputError, match=r"planned 22 updates .* update 23"):
        opt.step()


def test_zero_grad_closure_and_torch_contract():
    w = torch.nn.Parameter(torch.ones(3))
    opt = MinimalDissipation([w], duration=1.0, n_steps=5, tau=1.0)
    assert isinstance(opt, torch.optim.Optimizer)
    (w ** 2).sum().backward()
    opt.zero_grad()
    assert w.grad is None
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls and float(loss.detach()) == 3.0 and w.grad is not None
    assert opt.param_groups[0]["lr"] == 1.0 and opt.param_groups[0]["step"] == 1


def test_param_groups_have_their_own_lr_and_preconditioner():
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = MinimalDissipation([{"params": [a], "lr": 2.0}, {"params": [b], "fisher": "diag", "damping": 0.0}],
                             duration=1.0, n_steps=4, tau=0.5)
    rates = plan(1.0, 4, tau=0.5).lr
    G = torch.randn(50, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a.grad, b.grad = torch.ones(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    opt.step(per_chain_grads=G)
    assert torch.equal(a.detach(), -2.0 * rates[0] * torch.ones(2, dtype=torch.float64))
    var = G[:, 2:].var(0)                                  # group 2 only sees its own columns
    torch.testing.assert_close(b.detach(), -rates[0] / var, rtol=1e-12, atol=0)
    c = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt.add_param_group({"params": [c], "lr": 1.0})
    assert opt.param_groups[-1]["step"] == 1
    a.grad = b.grad = None
    c.grad = torch.ones(1, dtype=torch.float64)
    opt.step()
    assert float(c.detach()) == -rates[1]
    assert all(g["step"] == 2 for g in opt.param_groups)


def _fisher_run(opt, theta, G_list, g_list, start=0):
    for k in range(start, len(g_list)):
        theta.grad = g_list[k].clone()
        opt.step(per_chain_grads=G_list[k] if k % 2 == 0 else None)
    return theta.detach().clone()


@pytest.mark.parametrize("fisher", ["full", "diag", "lowrank"])
def test_state_dict_round_trip_resumes_bit_exactly(fisher):
    gen = torch.Generator().manual_seed(3)
    P, n_updates = 4, 12
    G_list = [torch.randn(40, P, generator=gen) * torch.arange(1, P + 1) for _ in range(n_updates)]
    g_list = [torch.randn(P, generator=gen) for _ in range(n_updates)]

    def make(theta):
        return MinimalDissipation([theta], duration=1.0, n_steps=n_updates - 2, tau=0.4, fisher=fisher, lr=0.5)

    ref_theta = torch.nn.Parameter(torch.zeros(P))           # float32 parameters, float64 Fisher
    ref = _fisher_run(make(ref_theta), ref_theta, G_list, g_list)

    theta = torch.nn.Parameter(torch.zeros(P))
    opt = make(theta)
    for k in range(5):
        theta.grad = g_list[k].clone()
        opt.step(per_chain_grads=G_list[k] if k % 2 == 0 else None)
    buf = io.BytesIO()
    torch.save({"theta": theta.detach().clone(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)                                   # weights_only: plain types only
    theta2 = torch.nn.Parameter(saved["theta"])
    opt2 = make(theta2)
    opt2.load_state_dict(saved["opt"])
    st = opt2.state[theta2]
    estimate = st["fisher_pre"].estimate     # mindiss.preconditioners.Fisher, the library's one Fisher
    estimate = estimate[0][1] if isinstance(estimate, list) else estimate
    assert estimate.dtype == torch.float64 and opt2.updates_done == 5
    assert opt2.last_move_time == opt.last_move_time
    out = _fisher_run(opt2, theta2, G_list, g_list, start=5)
    assert torch.equal(out, ref)


def test_fisher_directions_match_dense_references():
    gen = torch.Generator().manual_seed(5)
    n, P = 60, 5
    G = torch.randn(n, P, dtype=torch.float64, generator=gen) @ torch.randn(P, P, dtype=torch.float64, generator=gen)
    g = torch.randn(P, dtype=torch.float64, generator=gen)
    c = G - G.mean(0)
    cov = c.T @ c / (n - 1)
    refs = {"full": torch.linalg.solve(cov + 0.1 * torch.eye(P, dtype=torch.float64), g),
            "diag": g / (torch.diagonal(cov) + 0.1),
            "lowrank": torch.linalg.solve(c.T @ c / n + 0.1 * torch.eye(P, dtype=torch.float64), g)}
    rates = plan(1.0, 3, tau=1.0).lr
    for kind, ref in refs.items():
        theta = torch.nn.Parameter(torch.zeros(P, dtype=torch.float64))
        opt = MinimalDissipation([theta], duration=1.0, n_steps=3, tau=1.0, fisher=kind, damping=0.1,
                                 cg_tol=1e-13)
        theta.grad = g.clone()
        opt.step(per_chain_grads=G)
        torch.testing.assert_close(theta.detach(), -rates[0] * ref, rtol=1e-9, atol=1e-12)


class _Trap(torch.nn.Module):
    """E = |x - centre|^2 / (2 s) as a module (per-chain gradients by torch.func)."""

    def __init__(self, centre):
        super().__init__()
        self.centre = torch.nn.Parameter(torch.tensor(centre, dtype=torch.float64))

    def forward(self, x):
        return ((x - self.centre) ** 2).sum(-1) / (2 * S)


def test_per_chain_grads_module_and_callable_agree_with_closed_form():
    gen = torch.Generator().manual_seed(2)
    trap = _Trap([0.3, -0.2])
    x = torch.randn(32, 2, dtype=torch.float64, generator=gen)
    exact = (trap.centre.detach() - x) / S                      # d_theta E = (theta - x) / s
    G_vmap = per_chain_grads(trap, [trap.centre], x)
    G_loop = per_chain_grads(lambda z: ((z - trap.centre) ** 2).sum(-1) / (2 * S), [trap.centre], x)
    torch.testing.assert_close(G_vmap, exact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(G_loop, exact, rtol=1e-12, atol=1e-12)
    sub = per_chain_grads(trap, [trap.centre], x, rows=8, gen=torch.Generator().manual_seed(0))
    assert sub.shape == (8, 2)
    with pytest.raises(InputError, match="gen"):
        per_chain_grads(trap, [trap.centre], x, rows=8)


def test_natural_gradient_on_the_trap_is_the_harmonic_optimum():
    """fisher='full' from per-chain gradients, lr = 1, tau = s/mu: I^-1 = s, so the steps are
    eta* g_hat up to the Fisher's sampling error (a few / sqrt(N))."""
    gen = torch.Generator().manual_seed(11)
    N = 20_000
    energy = _Trap([-0.4])
    theta = energy.centre
    chains = -0.4 + math.sqrt(S) * torch.randn(N, 1, dtype=torch.float64, generator=gen)
    opt = MinimalDissipation([theta], duration=T, n_steps=N_STEPS, tau=S / MU, fisher="full", damping=0.0,
                             energy=energy)
    theta.grad = torch.tensor([0.8], dtype=torch.float64)
    opt.step(chains=chains)
    expected = -0.4 - plan(T, N_STEPS, variance=S, mobility=MU).lr[0] * 0.8
    assert abs(float(theta.detach()) - expected) < 5 * abs(expected + 0.4) * math.sqrt(2.0 / N)


def test_scheduler_gives_the_plan_to_your_optimizer():
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=1.0)
    sched = MinimalDissipationLR(opt, duration=T, n_steps=N_STEPS, variance=S, mobility=MU)
    rates = plan(T, N_STEPS, variance=S, mobility=MU).lr
    seen = []
    for k in range(sched.n_updates):
        seen.append(opt.param_groups[0]["lr"])
        w.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
        sched.step()
    assert seen == [float(r) for r in rates]
    assert opt.param_groups[0]["lr"] == 0.0 and sched.move_time(1) == T / N_STEPS
    sd = copy.deepcopy(sched.state_dict())
    with pytest.raises(InputError, match="planned 22 updates"):
        sched.step()
    sched2 = MinimalDissipationLR(torch.optim.SGD([w], lr=1.0), duration=T, n_steps=N_STEPS, variance=S, mobility=MU)
    sched2.load_state_dict(sd)
    assert sched2.last_epoch == sched.n_updates
    # base lr multiplies the dimensionless alpha factors
    opt3 = torch.optim.SGD([w], lr=0.25)
    MinimalDissipationLR(opt3, duration=T, n_steps=N_STEPS, tau=S / MU)
    assert opt3.param_groups[0]["lr"] == 0.25 * plan(T, N_STEPS, tau=S / MU).lr[0]


@pytest.mark.parametrize("kwargs, match", [
    ({"tau": 1.0, "variance": 1.0}, "exactly one"),
    ({}, "exactly one"),
    ({"variance": 1.0, "fisher": "full"}, "already contains"),
    ({"tau": 1.0, "fisher": "kfac"}, "fisher must be one of"),
    ({"tau": 1.0, "lr": -1.0}, "lr must be"),
    ({"tau": -1.0}, "tau must be positive"),
])
def test_bad_input_is_refused_with_a_named_reason(kwargs, match):
    with pytest.raises(InputError, match=match):
        MinimalDissipation([torch.nn.Parameter(torch.zeros(1))], duration=1.0, n_steps=4, **kwargs)


def test_fisher_without_samples_says_how_to_give_them():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = MinimalDissipation([w], duration=1.0, n_steps=4, tau=1.0, fisher="diag")
    w.grad = torch.ones(2)
    with pytest.raises(InputError, match="per_chain_grads"):
        opt.step()
    with pytest.raises(InputError, match=r"shape \(n_chains, 2\)"):
        opt.step(per_chain_grads=torch.ones(5, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_parameters_give_the_cpu_result():
    gen = torch.Generator().manual_seed(4)
    G = torch.randn(30, 3, dtype=torch.float64, generator=gen)
    g = torch.randn(3, dtype=torch.float64, generator=gen)
    out = {}
    for device in ("cpu", "cuda"):
        w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64, device=device))
        opt = MinimalDissipation([w], duration=1.0, n_steps=3, tau=1.0, fisher="full")
        for _ in range(3):
            w.grad = g.to(device)
            opt.step(per_chain_grads=G.to(device))
        assert w.device.type == device and opt.state[w]["fisher"].device.type == device
        sd = opt.state_dict()
        w2 = torch.nn.Parameter(w.detach().clone())
        opt2 = MinimalDissipation([w2], duration=1.0, n_steps=3, tau=1.0, fisher="full")
        opt2.load_state_dict(sd)
        assert opt2.state[w2]["fisher"].device.type == device
        out[device] = w.detach().cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-12, atol=1e-12)


def test_fisher_optimizer_follows_trains_natural_gradient_path_on_the_trap():
    """Expert mode: MinimalDissipation(fisher='full') fed train()'s chains gives train's theta path with
    schedules.natural_gradient (the same preconditioners.Fisher, not a copy of it) to 1e-12."""
    from mindiss.data.base import as_dataset
    from mindiss.core.train import _seeds

    energy = md.HarmonicTrap(variance=S)
    data = md.data.Gaussian(mean=[1.7], variance=0.3)
    n_steps, n_chains, seed = 20, 3000, 5
    res = md.train(energy, data, schedule=md.schedules.natural_gradient(T, tau=S / MU, fisher="full", damping=0.0),
                   theta0=[-0.4], mobility=MU, n_steps=n_steps, n_chains=n_chains, n_replicas=1, seed=seed)
    ds = as_dataset(data, 1)
    gen = torch.Generator().manual_seed(_seeds(seed, 1)[0][0])
    theta = torch.tensor([-0.4], dtype=torch.float64)
    x = energy.sample_equilibrium(theta, n_chains, gen=gen, dtype=torch.float32)
    opt = MinimalDissipation([theta], duration=T, n_steps=n_steps, tau=S / MU, fisher="full", damping=0.0)
    path = [theta.clone()]
    for _ in range(opt.n_updates):
        theta.grad = (energy.expected_grad_theta(ds.mean, ds.variance, theta)
                      - energy.expected_grad_theta(x.mean(0, dtype=torch.float64), None, theta))
        opt.step(per_chain_grads=energy.grad_theta(x, theta))
        path.append(theta.clone())
        if opt.last_move_time > 0:
            x = md.ExactOU().step(energy, theta, x, dt=opt.last_move_time, mobility=MU, gen=gen)
    ours = torch.stack(path).numpy()
    np.testing.assert_allclose(ours, np.asarray(res.thetas).reshape(ours.shape), rtol=0, atol=1e-12)


def test_practitioner_scheduler_two_lines_mean_lr_and_no_impulse():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=1e-3)
    sched = MinimalDissipationLR(opt, total_updates=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        w.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert abs(np.mean(lrs) - 1e-3) < 1e-12                 # the run's mean lr is the optimizer's lr
    tau = 100.0                                              # no tracker, no tau: tau = T
    raw = [1 / (100 - (k + 0.5) + 2 * tau) for k in range(100)]
    np.testing.assert_allclose(lrs, 1e-3 * np.array(raw) / np.mean(raw), rtol=1e-12)
    assert lrs[-1] / lrs[-2] < 1.01                          # no final impulse by default
    adam = torch.optim.Adam([w], lr=1e-3)                    # step-normalised: constant without tau/tracker
    sched = MinimalDissipationLR(adam, total_updates=100)
    for _ in range(100):
        assert adam.param_groups[0]["lr"] == pytest.approx(1e-3, rel=1e-15)
        adam.step()
        sched.step()
    with_end = rate_factors(100, 5.0, final_impulse=True)
    assert with_end[-1] > 10 * rate_factors(100, 5.0)[-1] / 2   # the option folds the impulse into the last lr


def test_practitioner_scheduler_extends_and_round_trips():
    def run(k_stop, extend_at=None):
        w = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.SGD([w], lr=0.1)
        sched = MinimalDissipationLR(opt, total_updates=50, tau=7.0)
        out = []
        for k in range(k_stop):
            if k == extend_at:
                sched.set_total_updates(80)
            out.append(opt.param_groups[0]["lr"])
            w.grad = torch.ones(2)
            opt.step()
            sched.step()
        return out, opt, sched

    lrs, _, _ = run(80, extend_at=30)
    full = rate_factors(80, 7.0)
    np.testing.assert_allclose(lrs[30:], 0.1 * np.array(full[30:]), rtol=1e-12)   # re-planned as if T = 80
    np.testing.assert_allclose(lrs[:30], 0.1 * np.array(rate_factors(50, 7.0)[:30]), rtol=1e-12)
    a, opt, sched = run(20)
    sd = sched.state_dict()
    w2 = torch.nn.Parameter(torch.zeros(2))
    opt2 = torch.optim.SGD([w2], lr=0.1)
    sched2 = MinimalDissipationLR(opt2, total_updates=50, tau=7.0)
    sched2.load_state_dict(sd)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == 20
    with pytest.raises(InputError, match="below"):
        sched.set_total_updates(10)


def test_practitioner_optimizer_matches_the_scheduler_with_sgd():
    w1, w2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt1 = MinimalDissipation([w1], total_updates=30, tau=4.0, lr=0.2)
    sgd = torch.optim.SGD([w2], lr=0.2)
    sched = MinimalDissipationLR(sgd, total_updates=30, tau=4.0)
    for k in range(30):
        g = torch.tensor([math.sin(k), math.cos(k)])
        w1.grad, w2.grad = g.clone(), g.clone()
        opt1.step()
        sgd.step()
        sched.step()
    torch.testing.assert_close(w1.detach(), w2.detach(), rtol=1e-6, atol=1e-7)
    with pytest.raises(InputError, match="not both"):
        MinimalDissipation([w1], duration=1.0, n_steps=3, tau=1.0, total_updates=5)


def test_practitioner_optimizer_param_groups_closure_and_extension():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    opt = MinimalDissipation([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.02}], total_updates=10, tau=3.0)
    f = rate_factors(20, 3.0)
    calls = []
    for k in range(20):
        if k == 5:
            opt.set_total_updates(20)           # extended before the 6th update: re-planned as if T = 20
        def closure():
            calls.append(k)
            a.grad, b.grad = torch.ones(2), torch.ones(1)
            return torch.tensor(float(k))
        assert float(opt.step(closure)) == k
    g = rate_factors(10, 3.0)
    expect_a = -0.1 * (sum(g[:5]) + sum(f[5:]))
    expect_b = -0.02 * (sum(g[:5]) + sum(f[5:]))
    assert calls == list(range(20)) and opt.updates_done == 20
    torch.testing.assert_close(a.detach(), torch.full((2,), expect_a), rtol=1e-6, atol=0)
    torch.testing.assert_close(b.detach(), torch.full((1,), expect_b), rtol=1e-6, atol=0)
    with pytest.raises(InputError, match="below"):
        opt.set_total_updates(3)


def test_constant_excess_power_mode_follows_the_measured_friction():
    """adapt='power': f_k = c_hat_k^(-1/2) / mean_j<=k c_hat_j^(-1/2) (constant excess power f^2 c up to the
    running normalisation that keeps the mean lr at the base lr), c_hat_k the mean of c_j = Var(w_j) / (2 f_j^2)
    over the last 20 updates; recomputed here from the known friction sequence."""
    from types import SimpleNamespace

    from mindiss.adapters.optim import _Planner

    ledger = SimpleNamespace(history=[])
    tracker = SimpleNamespace(ledger=ledger, relaxation_time=lambda: math.nan)
    planner = _Planner(200, None, tracker, False, False)
    assert planner.adapt == "power"
    friction = [1.0 if k < 100 else 4.0 for k in range(200)]
    fs = []
    for k in range(200):
        f = planner.factor(k)
        fs.append(f)
        ledger.history.append((k + 1, 0.0, 2.0 * friction[k] * f * f, 0.0, 0.0, math.nan, 0))
    assert fs[:20] == [1.0] * 20                                 # warm-up at the base lr
    raw = [np.mean(friction[k - 20:k]) ** -0.5 for k in range(20, 200)]
    expected = [min(max(r / np.mean(raw[: i + 1]), 1 / 3), 3) for i, r in enumerate(raw)]
    np.testing.assert_allclose(fs[20:], expected, rtol=1e-12)
    assert fs[199] < 0.7 * fs[99]                                # the lr drops where the friction rose
    with pytest.raises(InputError, match="needs tracker"):
        _Planner(10, None, None, False, False, adapt="power")
