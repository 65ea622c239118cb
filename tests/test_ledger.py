"""mindiss.ledger: the one ledger, the one Delta F dispatch and the measured bias.

Independent references: the bias from a grid log Z computed here (not mindiss.evaluate) and
sum_k dtheta_k . g_hat_k summed in the test loop; Identity 1 for the harmonic trap (bias = W_ex
exactly, because E is linear in theta up to x-independent terms); mindiss.train's own Delta F."""
import io
import math

import numpy as np
import pytest
import torch

import mindiss as md
from mindiss.errors import InputError
from mindiss.core.ledger import Ledger, delta_free_energy
from mindiss.adapters.tracker import WorkTracker, follow_replay_buffer

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def test_bias_equals_excess_work_on_the_harmonic_trap_to_float_precision():
    """E = (x - theta)^2 / 2s is linear in theta up to x-independent terms: L - L_approx = W_ex exactly
    (Identity 1 in discrete time), for any schedule; here a crude constant-lr SGD loop with Euler moves."""
    s, gen = 0.7, torch.Generator().manual_seed(4)
    theta = torch.nn.Parameter(torch.tensor([-0.5], dtype=F64))

    def energy(x):
        return ((x - theta) ** 2).sum(-1) / (2 * s)

    data = 1.3 + 0.4 * torch.randn(3000, 1, dtype=F64, generator=gen)
    chains = -0.5 + math.sqrt(s) * torch.randn(1000, 1, dtype=F64, generator=gen)
    opt = torch.optim.SGD([theta], lr=0.3)
    tracker = WorkTracker(energy, chains, data=data, params=[theta],
                          free_energy_fn=lambda _: -0.5 * math.log(2 * math.pi * s))
    for _ in range(25):
        opt.zero_grad()
        (energy(data).mean() - energy(chains).mean()).backward()
        with tracker.update():
            opt.step()
        with torch.no_grad():
            chains = chains - 0.05 * (chains - theta) / s + math.sqrt(0.1) * torch.randn(chains.shape, dtype=F64,
                                                                                          generator=gen)
        tracker.after_move(chains)
    rep = tracker.report()
    assert rep.bias_reason == "measured"
    assert abs(rep.bias - rep.excess_work) < 1e-12 * max(1.0, abs(rep.excess_work))
    assert abs(rep.bias_residual) < 1e-12 and rep.excess_work > 0.05


class _Moons(torch.nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                       torch.nn.SiLU(), torch.nn.Linear(64, 1))
        with torch.no_grad():
            for m in self.net:
                if isinstance(m, torch.nn.Linear):
                    b = 1 / math.sqrt(m.in_features)
                    m.weight.uniform_(-b, b, generator=gen)
                    m.bias.uniform_(-b, b, generator=gen)

    def forward(self, x):
        return self.net(x).squeeze(-1) + 0.25 * (x * x).sum(-1)


def _grid_log_z(model, half=8.0, n=401) -> float:
    """ln Z by the trapezoid rule on [-half, half]^2, written here apart from mindiss.evaluate."""
    axis = torch.linspace(-half, half, n, dtype=F64)
    h = float(axis[1] - axis[0])
    w = torch.full((n,), h, dtype=F64)
    w[0] = w[-1] = h / 2
    X, Y = torch.meshgrid(axis, axis, indexing="ij")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], 1)
    with torch.no_grad():
        e = model.double()(pts)
    model.float()
    logw = (w.log()[:, None] + w.log()[None, :]).reshape(-1)
    return float(torch.logsumexp(-e + logw, 0))


def test_measured_bias_on_the_moons_loop_matches_an_independent_computation():
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(4000, generator=gen) * math.pi
    up = torch.arange(4000) < 2000
    data = torch.where(up[:, None], torch.stack([t.cos(), t.sin()], 1), torch.stack([1 - t.cos(), 0.5 - t.sin()], 1))
    data = data + 0.1 * torch.randn(4000, 2, generator=gen) - torch.tensor([0.5, 0.25])
    model = _Moons(gen)
    chains = torch.randn(1000, 2, generator=gen) * math.sqrt(2.0)
    box = ((-8.0, 8.0), (-8.0, 8.0))
    tracker = WorkTracker(model, chains, data=data, box=box)
    with torch.no_grad():
        e_data0 = float(model(data).double().mean())
    log_z0 = _grid_log_z(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    approx = 0.0
    for _ in range(15):
        batch = data[torch.randint(0, 4000, (500,), generator=gen)]
        opt.zero_grad()
        (model(batch).mean() - model(chains).mean()).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
        before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().double()
        with tracker.update():
            opt.step()
        approx += float((torch.nn.utils.parameters_to_vector(model.parameters()).detach().double() - before) @ g)
        for _ in range(10):
            x = chains.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(model(x).sum(), x)
            chains = (x - 0.01 * gx + math.sqrt(0.02) * torch.randn(x.shape, generator=gen)).detach()
        tracker.after_move(chains)
    with torch.no_grad():
        e_data1 = float(model(data).double().mean())
    true_change = (e_data1 - e_data0) + (_grid_log_z(model) - log_z0)      # L = E_data[E] + ln Z
    reference = true_change - approx
    rep = tracker.report("quadrature", grid_n=401)
    assert rep.bias_reason == "measured" and rep.free_energy_method.startswith("quadrature")
    assert abs(rep.loss_approx_change - approx) < 1e-9 * max(1.0, abs(approx))
    assert abs(rep.bias - reference) < max(rep.bias_se, 1e-6)
    assert rep.bias != rep.excess_work                       # measured, not copied
    assert abs(rep.bias_residual) < 4 * rep.bias_residual_se + 0.05 * abs(rep.excess_work) + 1e-3


def test_bias_is_nan_with_a_reason_without_data_or_delta_f():
    model = _Moons(torch.Generator().manual_seed(1))
    tracker = WorkTracker(model, torch.zeros(50, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    (model(torch.ones(3, 2)).mean() - model(torch.zeros(50, 2)).mean()).backward()
    with tracker.update():
        opt.step()
    rep = tracker.report("none")
    assert math.isnan(rep.bias) and "data" in rep.bias_reason and "Delta F" in rep.bias_reason
    assert math.isfinite(rep.loss_approx_change)


def test_delta_f_dispatch_gives_trains_numbers():
    """Jarzynski from the run's own work and the exact Delta F, as mindiss.train reports them."""
    energy = md.Gaussian()
    data = md.data.Gaussian(mean=[1.0], variance=0.5)
    res = md.train(energy, data, schedule=md.schedules.constant(0.3, 1.0), theta0=[0.0, 1.0], n_steps=20,
                   n_chains=2000, n_replicas=1, seed=3, sampler="mala", keep_chains=True, free_energy="exact")
    th0, th1 = torch.tensor([0.0, 1.0], dtype=F64), torch.tensor(res.theta_final, dtype=F64)
    exact = delta_free_energy(energy, th0, th1, method="exact")
    assert exact.method == "exact" and abs(exact.delta_free_energy - res.delta_free_energy) < 1e-12
    jar = delta_free_energy(None, th0, th1, method="jarzynski", work=torch.as_tensor(res.chain_work))
    ref = md.free_energy.jarzynski(torch.as_tensor(res.chain_work))
    assert jar.delta_free_energy == ref.delta_free_energy and jar.method.startswith("jarzynski")
    none = delta_free_energy(None, th0, th1, method="ais")
    assert math.isnan(none.delta_free_energy) and none.method.startswith("none")
    with pytest.raises(InputError, match="free_energy must be one of"):
        delta_free_energy(energy, th0, th1, method="magic")


def test_ledger_state_dict_is_plain_and_round_trips():
    led = Ledger(torch.arange(6, dtype=F64))
    led.record_work(torch.full((6,), 0.5), approx_change=0.1)
    led.record_heat(torch.arange(6, dtype=F64) * 1.1)
    led.reassign(torch.tensor([1, 0, -1, 3, 4, 5]), torch.arange(6, dtype=F64))
    buf = io.BytesIO()
    torch.save(led.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    other = Ledger(torch.zeros(6, dtype=F64))
    other.load_state_dict(sd)
    assert torch.equal(other.work, led.work) and torch.equal(other.heat, led.heat)
    assert other.n_restarts == 1 and other.history == led.history and other.mean_work == led.mean_work
    # per system: E_now - E_entry = W + Q (the restarted slot 2 starts afresh)
    assert other.first_law_residual(torch.arange(6, dtype=F64)) < 1e-12


class _FakeBuffer:
    """A replay buffer with torchebm's interface: draws slots, (optionally) jitters, FIFO write-back."""

    def __init__(self, size, batch, gen, jitter=0):
        self.replay_buffer = torch.randn(size, 1, generator=gen)
        self.size, self.batch, self.gen, self.jitter = size, batch, gen, jitter
        self._buffer_ptr_int = 0

    def get_start_points(self, x):
        idx = torch.randperm(self.size, generator=self.gen)[: self.batch]
        start = self.replay_buffer[idx].clone()
        start[: self.jitter] += 0.01
        return start

    def update_buffer(self, samples):
        p = self._buffer_ptr_int
        for j in range(samples.shape[0]):
            self.replay_buffer[(p + j) % self.size] = samples[j]
        self._buffer_ptr_int = (p + samples.shape[0]) % self.size

    def __call__(self, x, model):
        start = self.get_start_points(x)
        out = start - 0.1 * start + 0.1 * torch.randn(start.shape, generator=self.gen)   # a move at fixed theta
        self.update_buffer(out)
        return out


@pytest.mark.parametrize("size, batch, jitter", [(64, 64, 0), (64, 64, 3), (96, 32, 0)])
def test_replay_buffer_follower_counts_restarts_and_keeps_the_first_law(size, batch, jitter):
    gen = torch.Generator().manual_seed(size + batch + jitter)
    theta = torch.nn.Parameter(torch.zeros(1))

    def energy(x):
        return 0.5 * ((x - theta) ** 2).sum(-1)

    buf = _FakeBuffer(size, batch, gen, jitter)
    follower = follow_replay_buffer(energy, buf)
    opt = torch.optim.SGD([theta], lr=0.1)
    for _ in range(6):
        buf(None, energy)
        theta.grad = torch.ones(1)
        with follower.update():
            opt.step()
    rep = follower.report("none")
    assert rep.first_law_residual < 1e-6
    if size == batch and jitter == 0:
        # a permutation of the slots: every system keeps its identity, none restarted
        assert rep.n_restarts == 0
    elif size == batch:
        assert rep.n_restarts == 6 * jitter
    else:
        assert rep.n_restarts > 0 and any("restarted" in n for n in rep.notes)


def test_delta_f_dispatch_reproduces_trains_ais_estimate_exactly():
    """train(free_energy='ais') and the ledger's dispatch, given the same initial chains, theta path end
    points, step and generator seed (train's: chain seed * 31 + 17), give the same Delta F bit for bit."""
    from mindiss.core.train import _seeds

    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=F64))
    energy = md.NeuralEnergy(net, 1, confinement=1.0)
    data = torch.randn(500, 1, dtype=F64, generator=gen) * 0.5 + 0.3
    x0 = torch.randn(256, 1, dtype=F64, generator=gen)
    theta0 = torch.nn.utils.parameters_to_vector(net.parameters()).detach().double()
    res = md.train(energy, data, schedule=md.schedules.constant(0.2, 0.5), theta0=theta0.tolist(), n_steps=10,
                   n_chains=256, n_replicas=1, seed=4, sampler="mala", chains=x0, dtype=F64, free_energy="ais")
    g = torch.Generator().manual_seed((_seeds(4, 1)[0][0] * 31 + 17) % (2**63))
    out = delta_free_energy(energy, theta0, torch.tensor(res.theta_final, dtype=F64), method="ais", x0=x0, gen=g,
                            dt=0.01, mobility=1.0)
    assert out.delta_free_energy == res.delta_free_energy and out.delta_free_energy_se == res.delta_free_energy_se
    assert out.method == res.free_energy_method == "ais" and math.isfinite(out.delta_free_energy)
