"""Independent references for the report's checks: pure NumPy (and ``math``), written apart from the library.

Nothing here imports mindiss (``tests/test_references.py`` checks the imports), so a check whose reference
comes from this module tests the library against separately written code. Units kT = 1; the harmonic trap
E = (x - theta)^2 / (2 s), stiffness k = 1/s, relaxation time tau = s / mu; the learnable-variance Gaussian
E = (x - a)^2 / (2 s).

* closed forms: ``harmonic_bound`` (Schmiedl-Seifert), ``discrete_harmonic_bound`` (n updates),
  ``gaussian_bound`` (learnable variance: mean part + stiffness change), ``joules``;
* ``trap_ledger``: the canonical update loop on the trap for N -> infinity chains (chain mean by the exact
  OU transition), with its ledger: work, entropy production, the chains' lag KL, the true loss and the
  approximate objective;
* ``trap_particles``: the same loop with N chains (exact OU moves, NumPy's generator) replaying a prescribed
  theta path, per-chain work; ``fermi_mean`` for the Crooks statistic.
"""
from __future__ import annotations

import math

import numpy as np

#: Boltzmann's constant, J/K (exact, SI 2019).
K_BOLTZMANN = 1.380649e-23


def harmonic_bound(s: float, mu: float, T: float, distance: float) -> float:
    """W* = k D^2 / (2 + T / tau): the least excess work moving the trap centre by D in time T."""
    return (distance * distance / s) / (2.0 + mu * T / s)


def discrete_harmonic_bound(n: int, s: float, mu: float, T: float, distance: float) -> float:
    """W*(n) = k D^2 / (2 + 2 n tanh(mu T / (2 n s))): the least excess work with n interior updates."""
    return (distance * distance / s) / (2.0 + 2.0 * n * math.tanh(mu * T / (2.0 * n * s)))


def joules(work_kt: float, kelvin: float = 300.0) -> float:
    """W k_B T_kelvin in joules."""
    return work_kt * K_BOLTZMANN * kelvin


def stiffness_change_excess(lam_i: float, lam_f: float, t_f: float) -> float:
    """Schmiedl-Seifert: least W - Delta F changing V = lam x^2 / 2 from lam_i to lam_f in time t_f (mu = 1);
    W* = c^2 t_f / lam_i + (lam_f / (2 lam_i)) (1 + c t_f)^2 - 1/2 - ln(1 + c t_f), Delta F = ln(lam_f / lam_i) / 2."""
    c = (-1.0 - lam_f * t_f + math.sqrt(1.0 + 2.0 * lam_i * t_f + lam_i * lam_f * t_f * t_f)) / (
        2.0 * t_f + lam_f * t_f * t_f)
    w = c * c * t_f / lam_i + lam_f / (2.0 * lam_i) * (1.0 + c * t_f) ** 2 - 0.5 - math.log(1.0 + c * t_f)
    return w - 0.5 * math.log(lam_f / lam_i)


def gaussian_bound(a0: float, s0: float, a_f: float, s_f: float, mu: float, T: float) -> float:
    """Least excess work taking the learnable-variance Gaussian from equilibrium at (a0, s0) to (a_f, s_f) in
    time T: mean part (a_f - a0)^2 / (mu T + 2 s_f) plus the stiffness change 1/s0 -> 1/s_f over mu T."""
    mean = (a_f - a0) ** 2 / (mu * T + 2.0 * s_f)
    var = 0.0 if s_f == s0 else stiffness_change_excess(1.0 / s0, 1.0 / s_f, mu * T)
    return mean + var


def trap_loss(theta, xbar, s: float, data_variance: float | None = None):
    """L(theta) = ((xbar - theta)^2 + v_d) / (2 s) + ln(2 pi s) / 2 (1-D; v_d = s by default)."""
    vd = s if data_variance is None else data_variance
    return ((xbar - np.asarray(theta, float)) ** 2 + vd) / (2.0 * s) + 0.5 * math.log(2.0 * math.pi * s)


def trap_ledger(lr, dt, s: float, mu: float, theta0: float, xbar: float) -> dict:
    """The canonical loop on the 1-D trap with N -> infinity chains started in equilibrium at theta0.

    Update k: g = k (m - xbar), theta' = theta - lr_k g, work += k ((m - theta')^2 - (m - theta)^2) / 2 at
    frozen chains; then the chain mean relaxes for dt_k, m' = theta' + (m - theta') exp(-mu dt_k / s), and the
    entropy production is the decrease of the lag KL = k (m - theta)^2 / 2 (the chain variance stays s).
    Returns arrays over the n + 3 states (initial + after every update): theta, chain_mean, work,
    entropy_production, kl (at the state's theta, before the move), loss_true, loss_approx; and the scalars
    excess_work (= work: Delta F = 0), theta_final."""
    lr, dt = np.asarray(lr, float), np.asarray(dt, float)
    k = 1.0 / s
    theta, m = float(theta0), float(theta0)
    out = {key: [v] for key, v in (("theta", theta), ("chain_mean", m), ("work", 0.0), ("entropy_production", 0.0),
                                   ("kl", 0.0))}
    loss0 = float(trap_loss(theta, xbar, s))
    approx = [loss0]
    work = ep = 0.0
    for lr_k, dt_k in zip(lr, dt):
        g = k * (m - xbar)
        new = theta - lr_k * g
        work += 0.5 * k * ((m - new) ** 2 - (m - theta) ** 2)
        approx.append(approx[-1] + (new - theta) * g)
        theta = new
        kl_before = 0.5 * k * (m - theta) ** 2
        m = theta + (m - theta) * math.exp(-mu * dt_k / s)
        kl_after = 0.5 * k * (m - theta) ** 2
        ep += kl_before - kl_after
        for key, v in (("theta", theta), ("chain_mean", m), ("work", work), ("entropy_production", ep),
                       ("kl", kl_after)):
            out[key].append(v)
    res = {key: np.asarray(v) for key, v in out.items()}
    res["loss_true"] = trap_loss(res["theta"], xbar, s)
    res["loss_approx"] = np.asarray(approx)
    res["excess_work"], res["theta_final"] = work, theta
    return res


def trap_particles(theta_path, dt, s: float, mu: float, n_chains: int, seed: int) -> np.ndarray:
    """Per-chain work of a prescribed protocol on the 1-D trap: ``theta_path`` (n + 1,) is theta_0 and the value
    set by each update, ``dt`` (n,) each update's chain move; chains start in equilibrium at theta_0 and move by
    the exact OU transition x' = theta + (x - theta) e + sqrt(s (1 - e^2)) xi, e = exp(-mu dt / s)."""
    rng = np.random.default_rng(seed)
    theta_path, dt = np.asarray(theta_path, float), np.asarray(dt, float)
    x = theta_path[0] + math.sqrt(s) * rng.standard_normal(n_chains)
    work = np.zeros(n_chains)
    for k in range(dt.size):
        old, new = theta_path[k], theta_path[k + 1]
        work += ((x - new) ** 2 - (x - old) ** 2) / (2.0 * s)
        if dt[k] > 0:
            e = math.exp(-mu * dt[k] / s)
            x = new + (x - new) * e + math.sqrt(s * (1.0 - e * e)) * rng.standard_normal(n_chains)
    return work


def fermi_mean(work) -> float:
    """<1 / (1 + exp(W))>: by Crooks (Delta F = 0) the same for the forward and the reversed protocol."""
    w = np.asarray(work, float)
    return float(np.mean(0.5 * (1.0 - np.tanh(0.5 * w))))


def trap_path_work(theta_path, dt, s: float, mu: float) -> float:
    """<W> of a prescribed theta path (``trap_particles``' layout) for N -> infinity chains: chain mean m starts
    at theta_0; each update adds k ((m - theta')^2 - (m - theta)^2) / 2; each move m' = theta' + (m - theta') e."""
    theta_path, dt = np.asarray(theta_path, float), np.asarray(dt, float)
    m, work = theta_path[0], 0.0
    for k in range(dt.size):
        old, new = theta_path[k], theta_path[k + 1]
        work += ((m - new) ** 2 - (m - old) ** 2) / (2.0 * s)
        m = new + (m - new) * math.exp(-mu * dt[k] / s)
    return float(work)


def reversed_protocol(theta_path, dt):
    """The time-reversed protocol for Crooks: start at the last theta, visit the path backwards, each theta held
    for the move it had forward (update j of the reverse sets theta_{N-2-j}; the forward move after setting
    theta_i was dt[i - 1]); returns (theta_path, dt)."""
    theta_path, dt = np.asarray(theta_path, float), np.asarray(dt, float)
    return theta_path[::-1].copy(), np.r_[dt[:-1][::-1], 0.0]


def harmonic_split(s: float, mu: float, T: float, distance: float) -> tuple[float, float]:
    """(KL_T, EP) of the continuous optimum: the chain mean moves at v = D / (T + 2 tau) with lag v tau and ends
    2 v tau short of xbar, so KL_T = k (2 v tau)^2 / 2 and EP = int |dm/dt|^2 / mu dt = v^2 T / mu."""
    tau = s / mu
    v = distance / (T + 2.0 * tau)
    return 0.5 * (2.0 * v * tau) ** 2 / s, v * v * T / mu


# ---------------------------------------------------------------------------- two moons (neural section)

def moons_log_density(x, n_t: int = 801) -> np.ndarray:
    """ln p(x) of the two-moons process written apart from ``mindiss.data.toy``: a point of the outer arc
    (cos t, sin t) or the inner arc (1 - cos t, 1/2 - sin t), t ~ U(0, pi), each arm with probability 1/2,
    plus N(0, 0.1^2 I) noise, then shifted by -(1/2, 1/4) and doubled; so p(x) = (1/2) sum_arm (1/pi)
    int_0^pi N(x; 2 (c_arm(t) - (1/2, 1/4)), 0.2^2 I) dt, here by the composite Simpson rule on n_t
    (odd) points in t, with a log-sum-exp over the nodes. x: (n, 2) array; returns (n,)."""
    x = np.asarray(x, float)
    if n_t % 2 == 0:
        n_t += 1
    t = np.linspace(0.0, math.pi, n_t)
    w = np.full(n_t, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    w *= (t[1] - t[0]) / 3.0
    arcs = [np.stack([np.cos(t), np.sin(t)], 1), np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1)]
    var = 0.2 ** 2
    out = np.empty(x.shape[0])
    for i in range(0, x.shape[0], 512):
        xi = x[i:i + 512]
        terms = []
        for c in arcs:
            mu = 2.0 * (c - np.array([0.5, 0.25]))
            d2 = ((xi[:, None, :] - mu[None]) ** 2).sum(-1)
            terms.append(-0.5 * d2 / var - math.log(2 * math.pi * var) + np.log(w / math.pi * 0.5)[None])
        a = np.concatenate(terms, 1)
        m = a.max(1)
        out[i:i + 512] = m + np.log(np.exp(a - m[:, None]).sum(1))
    return out


def simpson_2d(values: np.ndarray, h: float) -> float:
    """The composite Simpson rule in both directions of an (n, n) array of samples (n odd) at spacing h."""
    n = values.shape[0]
    if n % 2 == 0 or values.shape[1] != n:
        raise ValueError("simpson_2d needs an (n, n) array with n odd")
    w = np.full(n, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    w *= h / 3.0
    return float(w @ values @ w)


def log_partition_simpson(energies: np.ndarray, h: float) -> float:
    """ln int exp(-E) dx on a square grid by ``simpson_2d`` (E: (n, n) samples, n odd), shifted by min E."""
    e = np.asarray(energies, float)
    m = e.min()
    return float(-m + math.log(simpson_2d(np.exp(-(e - m)), h)))


def moons_entropy(box: float = 5.0, n: int = 201, n_t: int = 401) -> float:
    """H = -int p ln p of the two-moons density (``moons_log_density``) by ``simpson_2d`` over
    [-box, box]^2 (the density is below 1e-30 outside [-3.5, 3.5]^2)."""
    g = np.linspace(-box, box, n)
    X, Y = np.meshgrid(g, g, indexing="xy")
    lp = moons_log_density(np.stack([X.ravel(), Y.ravel()], 1), n_t).reshape(n, n)
    p = np.exp(lp)
    return -simpson_2d(p * lp, g[1] - g[0])
