"""WorkTracker: the ledger of mindiss.train for any loop (bit-identical replay of train), the
harmonic optimum reproduced by a user loop with MinimalDissipation, Delta F estimators, resume."""
import math

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.data.base import as_dataset
from mindiss.errors import InputError
from mindiss.adapters.optim import MinimalDissipation
from mindiss.adapters.tracker import DissipationWarning, WorkReport, WorkTracker, combine
from mindiss.core.train import _seeds



pytestmark = pytest.mark.usefixtures("one_thread")


# theory.md section 5, check 1: s = 0.5, mu = 1.3, T = 2, theta_0 = -0.4, xbar = 1.7 (W* = 1.225)
S, MU, T, THETA0, XBAR = 0.5, 1.3, 2.0, -0.4, 1.7


def _replay_train(energy, data, theta0, n_steps, n_chains, seed):
    """train()'s exact sequence, driven from outside: the same generator (train._seeds, replica 0),
    equilibrium draws, g_hat, theta update (by MinimalDissipation), work, ExactOU move, heat."""
    ds = as_dataset(data, energy.dim)
    chain_seed, _ = _seeds(seed, 1)[0]
    gen = torch.Generator().manual_seed(chain_seed)
    theta = torch.tensor(theta0, dtype=torch.float64)
    x = energy.sample_equilibrium(theta, n_chains, gen=gen, dtype=torch.float32)   # ParticleChains.equilibrium
    opt = MinimalDissipation([theta], duration=T, n_steps=n_steps, variance=energy.variance, mobility=MU)
    tracker = WorkTracker(energy, x, theta=theta)
    sampler = md.ExactOU()
    for _ in range(opt.n_updates):
        g_hat = (energy.expected_grad_theta(ds.mean, ds.variance, theta)
                 - energy.expected_grad_theta(x.mean(0, dtype=torch.float64), None, theta))
        theta.grad = g_hat
        with tracker.update(theta):
            opt.step()
        if opt.last_move_time > 0:
            x = sampler.step(energy, theta, x, dt=opt.last_move_time, mobility=MU, gen=gen)
            tracker.after_move(x)
    return tracker, theta


@pytest.mark.parametrize("dim", [1, 2])
def test_tracker_reproduces_the_ledger_of_train_bit_for_bit(dim):
    energy = md.HarmonicTrap(variance=S, dim=dim)
    theta0, xbar = [THETA0] * dim, [XBAR, -0.3][:dim]
    data = md.data.Gaussian(mean=xbar, variance=0.3)
    n_steps, n_chains, seed = 30, 2000, 7
    res = md.train(energy, data, schedule=md.schedules.optimal_harmonic(S, MU, T), theta0=theta0, mobility=MU,
                   n_steps=n_steps, n_chains=n_chains, n_replicas=1, seed=seed, keep_chains=True)
    tracker, theta = _replay_train(energy, data, theta0, n_steps, n_chains, seed)
    assert np.array_equal(tracker.work.numpy(), res.chain_work)          # the same numbers, chain by chain
    assert np.array_equal(theta.detach().numpy(), res.thetas[-1])
    rep = tracker.report()
    assert rep.work == res.work and rep.excess_work == res.excess_work
    assert rep.first_law_residual == res.first_law_residual < 1e-12
    assert rep.delta_free_energy == 0.0 and rep.free_energy_method == "exact"
    assert rep.n_updates == n_steps + 2 and rep.n_moves == n_steps
    assert math.isnan(rep.bias) and "data" in rep.bias_reason     # measured, never copied from W_ex


def _user_loop(seed, data, n_steps, n_chains, fisher=None):
    """What a user writes: autograd on the CD loss, the optimizer, the tracker around step(), own sampler."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.nn.Parameter(torch.tensor([THETA0], dtype=torch.float64))

    def energy(x):
        return ((x.to(torch.float64) - theta) ** 2).sum(-1) / (2 * S)

    chains = (THETA0 + math.sqrt(S) * torch.randn(n_chains, 1, generator=gen)).float()   # equilibrium at theta_0
    if fisher is None:
        opt = MinimalDissipation([theta], duration=T, n_steps=n_steps, variance=S, mobility=MU)
    else:
        opt = MinimalDissipation([theta], duration=T, n_steps=n_steps, tau=S / MU, fisher=fisher, damping=0.0)
    tracker = WorkTracker(energy, chains, free_energy_fn=lambda _: 0.0)     # Z does not depend on theta
    trap = md.HarmonicTrap(S)
    for _ in range(opt.n_updates):
        opt.zero_grad()
        loss = energy(data).mean() - energy(chains).mean()      # CD loss; its gradient is g_hat
        loss.backward()
        with tracker.update():
            if fisher is None:
                opt.step()
            else:   # per-chain d_theta E = (theta - x)/s for the Fisher
                opt.step(per_chain_grads=(theta.detach() - chains.to(torch.float64)) / S)
        if opt.last_move_time > 0:
            chains = md.ExactOU().step(trap, theta.detach(), chains.clone(), dt=opt.last_move_time, mobility=MU,
                                       gen=gen)
            tracker.after_move(chains)
    return tracker.report()


@pytest.mark.parametrize("fisher", [None, "full"])
def test_user_loop_reaches_the_bound_and_agrees_with_train(fisher):
    n_steps, n_chains, n_rep = 40, 2000, 8
    data = XBAR + 0.6 * torch.randn(4000, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(123))
    combined = combine([_user_loop(1000 + r, data, n_steps, n_chains, fisher) for r in range(n_rep)])
    res = md.train(md.HarmonicTrap(S), data, schedule=md.schedules.optimal_harmonic(S, MU, T), theta0=[THETA0],
                   mobility=MU, n_steps=n_steps, n_chains=n_chains, n_replicas=n_rep, seed=5)
    bound = md.bounds.harmonic(S, MU, T, THETA0, float(data.mean())).excess_work
    se = math.hypot(combined.excess_work_se, res.excess_work_se)
    assert abs(combined.excess_work - res.excess_work) < 4 * se
    assert abs(combined.excess_work - bound) < 4 * combined.excess_work_se
    assert combined.error_kind == "across seeds" and combined.first_law_residual < 1e-12


def test_generic_energy_with_theta_argument_closes_the_first_law():
    """energy_fn(x, theta) for a non-quadratic energy, Euler-Maruyama moves: W + Q = Delta E per chain."""
    gen = torch.Generator().manual_seed(0)

    def energy(x, th):
        return (th[0] * x ** 4 / 4 - th[1] * x ** 2 / 2).sum(-1)

    theta = torch.tensor([1.0, 0.5], dtype=torch.float64)
    x = torch.randn(500, 1, dtype=torch.float64, generator=gen)
    tracker = WorkTracker(energy, x, theta=theta)
    for k in range(20):
        tracker.before_update(theta)
        theta = theta + torch.tensor([0.01, 0.05], dtype=torch.float64)      # functional update
        w = tracker.after_update(theta)
        assert w.shape == (500,)
        grad_x = theta[0] * x ** 3 - theta[1] * x
        x = x - 0.01 * grad_x + math.sqrt(0.02) * torch.randn(x.shape, dtype=torch.float64, generator=gen)
        tracker.after_move(x)
    rep = tracker.report(free_energy="none")
    assert rep.first_law_residual < 1e-12 and math.isnan(rep.excess_work)
    assert rep.n_updates == 20 and rep.n_moves == 20
    assert isinstance(rep, WorkReport) and set(rep.to_dict()) >= {"work", "excess_work_se", "bias"}


def test_delta_f_estimators_agree_with_the_closed_form():
    """Gaussian energy (learnable mean and variance): Delta F = (ln s0 - ln s1)/2 ... exact vs AIS vs BAR."""
    energy = md.Gaussian(dim=1)
    th0 = md.Gaussian.natural(0.0, 1.0)
    th1 = md.Gaussian.natural(0.5, 1.6)
    gen = torch.Generator().manual_seed(2)
    x = energy.sample_equilibrium(th0, 2000, gen=gen, dtype=torch.float64)
    tracker = WorkTracker(energy, x, theta=th0, keep_initial=1000)
    path = [th0 + f * (th1 - th0) for f in np.linspace(0.0, 1.0, 21)]
    for a, b in zip(path[:-1], path[1:]):
        tracker.before_update(a)
        tracker.after_update(b)
        x = md.ExactOU().step(energy, b, x, dt=0.05, mobility=1.0, gen=gen)
        tracker.after_move(x)
    exact = tracker.report("exact")
    assert exact.delta_free_energy == pytest.approx(-0.5 * math.log(1.6), rel=1e-12)
    assert exact.excess_work > 0 and exact.first_law_residual < 1e-12
    for method in ("ais", "bar"):
        est = tracker.report(method, gen=torch.Generator().manual_seed(9), n_intermediate=20, dt=0.05)
        assert est.free_energy_method == method
        assert abs(est.delta_free_energy - exact.delta_free_energy) < 4 * est.delta_free_energy_se + 1e-3
        assert est.excess_work_se >= est.work_se
    jar = tracker.report("jarzynski")
    assert abs(jar.delta_free_energy - exact.delta_free_energy) < 4 * jar.delta_free_energy_se + 0.02
    assert jar.notes and "feedback" in jar.notes[0]
    given = tracker.report(delta_free_energy=0.1, delta_free_energy_se=0.01)
    assert given.excess_work == pytest.approx(given.work - 0.1) and given.free_energy_method == "given"


def test_module_energy_gets_delta_f_by_ais():
    """An nn.Module energy of x alone: the tracker snapshots its parameters for AIS."""
    class Trap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.centre = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
            self.log_var = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

        def forward(self, x):
            return (((x - self.centre) ** 2) / (2 * self.log_var.exp())).sum(-1)

    model = Trap()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(800, 1, dtype=torch.float64, generator=gen)
    tracker = WorkTracker(model, x)
    with tracker.update():
        with torch.no_grad():
            model.centre += 0.3
            model.log_var += 0.4
    est = tracker.report("ais", gen=torch.Generator().manual_seed(1), n_intermediate=20, dt=0.05)
    assert abs(est.delta_free_energy - (-0.2)) < 4 * est.delta_free_energy_se + 1e-3   # -ln(sqrt(e^0.4))
    with pytest.raises(InputError, match="gen"):
        tracker.report("ais")


def test_resume_from_state_dict_continues_the_ledger():
    energy = md.HarmonicTrap(variance=S)
    gen = torch.Generator().manual_seed(1)
    thetas = [torch.tensor([0.1 * k], dtype=torch.float64) for k in range(8)]

    def drive(tracker, x, start, stop, gen):
        for k in range(start, stop):
            tracker.before_update(thetas[k])
            tracker.after_update(thetas[k + 1])
            x = md.ExactOU().step(energy, thetas[k + 1], x, dt=0.1, mobility=1.0, gen=gen)
            tracker.after_move(x)
        return x

    x0 = energy.sample_equilibrium(thetas[0], 300, gen=gen)
    g_state = gen.get_state()
    full = WorkTracker(energy, x0.clone(), theta=thetas[0])
    drive(full, x0.clone(), 0, 7, gen)
    gen.set_state(g_state)
    part = WorkTracker(energy, x0.clone(), theta=thetas[0])
    x = drive(part, x0.clone(), 0, 3, gen)
    sd = part.state_dict()
    resumed = WorkTracker(energy, x.clone(), theta=thetas[3])
    resumed.load_state_dict(sd)
    drive(resumed, x.clone(), 3, 7, gen)
    assert torch.equal(resumed.work, full.work) and torch.equal(resumed.heat, full.heat)
    assert resumed.report().to_dict() == full.report().to_dict()


def test_misuse_is_refused():
    energy = md.HarmonicTrap(variance=S)
    theta = torch.zeros(1, dtype=torch.float64)
    tracker = WorkTracker(energy, torch.zeros(10, 1), theta=theta)
    with pytest.raises(InputError, match="without before_update"):
        tracker.after_update(theta)
    tracker.before_update(theta)
    with pytest.raises(InputError, match="twice"):
        tracker.before_update(theta)
    with pytest.raises(InputError, match="frozen"):
        tracker.after_move(torch.zeros(10, 1))
    tracker.after_update(theta + 1)
    with pytest.raises(InputError, match="number and identity"):
        tracker.after_move(torch.zeros(9, 1))
    with pytest.raises(InputError, match="needs theta"):
        tracker.before_update()
    with pytest.raises(InputError, match="free_energy must be one of"):
        tracker.report("tii")
    lazy = WorkTracker(lambda x, th: (x - th).pow(2).sum(-1), torch.zeros(4, 1))
    with pytest.raises(InputError, match="before the tracker knows theta"):
        lazy.after_move(torch.zeros(4, 1))
    with pytest.raises(InputError, match="at least 2"):
        combine([tracker.report()])


def test_relaxation_time_is_the_energy_autocorrelation_time_of_exact_ou_moves():
    """E = (x - theta)^2 / 2s under exact OU moves of time dt at fixed theta: corr(E(x_0), E(x_dt)) =
    exp(-2 mu dt / s) (E is x^2 of a Gaussian AR(1) with rho = exp(-mu dt / s)), so tau = s / (2 mu dt)
    updates; the tracker estimates it from the chains alone."""
    energy, gen = md.HarmonicTrap(variance=S), torch.Generator().manual_seed(2)
    theta = torch.tensor([0.3], dtype=torch.float64)
    x = energy.sample_equilibrium(theta, 20_000, gen=gen, dtype=torch.float64)
    tracker = WorkTracker(energy, x, theta=theta)
    dt = 0.05
    for _ in range(20):
        x = md.ExactOU().step(energy, theta, x, dt=dt, mobility=MU, gen=gen)
        tracker.after_move(x)
    expected = S / (2 * MU * dt)
    assert abs(tracker.relaxation_time() - expected) < 0.03 * expected


def test_on_update_rows_and_the_dissipation_warning():
    """A loop whose lr jumps 40x at update 30: the warning fires there, not before."""
    theta = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def energy(x):
        return ((x - theta) ** 2).sum(-1) / 2

    gen = torch.Generator().manual_seed(0)
    chains = torch.randn(500, 1, dtype=torch.float64, generator=gen)
    rows = []
    tracker = WorkTracker(energy, chains, on_update=lambda tr, row: rows.append(row), params=[theta])
    opt = torch.optim.SGD([theta], lr=0.01)
    fired = []
    for k in range(35):
        opt.param_groups[0]["lr"] = 0.4 if k == 30 else 0.01
        opt.zero_grad()
        (energy(torch.ones(4, 1, dtype=torch.float64)).mean() - energy(chains).mean()).backward()
        with pytest.warns(DissipationWarning) if k == 30 else _no_warning():
            with tracker.update():
                opt.step()
        fired.append(tracker.n_warnings)
        chains = chains + 0.1 * (theta.detach() - chains) + math.sqrt(0.2) * torch.randn(chains.shape, generator=gen,
                                                                                         dtype=torch.float64)
        tracker.after_move(chains)
    assert fired.index(1) == 30 and tracker.n_warnings == 1
    hist = tracker.history()
    assert len(rows) == 35 and [r["update"] for r in rows] == list(range(1, 36))
    np.testing.assert_array_equal([r["work"] for r in rows], hist["work"])
    assert sum(hist["work"]) == pytest.approx(float(tracker.work.mean()), rel=1e-12)


class _no_warning:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", DissipationWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)
