"""The canonical update, once (design.md, "The canonical update"; theory.md section 2):

1. g_hat = E_data[d_theta E] - E_rho[d_theta E]              (the path the plan chose)
2. theta_new = theta - lr_k P_k g_hat                         (or the next point of a replayed path)
3. work_i += E_{theta_new}(x_i) - E_theta(x_i), chains frozen (Crooks step a)
4. chains move at theta_new for dt_k; heat_i += E(x_new) - E(x_old)   (Crooks step b)
5. history row, observers, progress, checkpoint               (``run_updates``)

and L_approx += (theta_new - theta) . g_hat, so that Identity 1 reads
L(theta_T) - L(theta_0) - (L_approx change) = W_ex = <W> - Delta F.

``bind(plan, run)`` turns the plan's choices into the three functions a step calls (g_hat, the
rate, the host copy); ``step`` has no type checks; ``run_updates`` is the loop around it.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .. import backends as _backends
from ..errors import DivergenceError

#: |mean work| or |mean heat| per chain beyond this (kT) is treated as a diverged run.
LEDGER_LIMIT = 1e12


class Interrupted(KeyboardInterrupt):
    """A run stopped on request (SIGINT/SIGTERM) after saving its checkpoint."""

    def __init__(self, update: int, checkpoint):
        self.update, self.checkpoint = update, checkpoint
        where = f"; checkpoint saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted at update {update}{where}")


def divergence_cause(sampler, energy, dt, mobility) -> str:
    """The likely cause of a divergence, in words."""
    from ..energies.base import HarmonicTrap

    if sampler.name == "euler" and isinstance(energy, HarmonicTrap):
        return (f"the Euler-Maruyama step is too large for the stiffness (mu dt / s = "
                f"{mobility * dt / energy.variance:.3g}; it must be well below 2)")
    return "the learning rate or chain step is too large for this energy"


def raise_if_g_not_finite(k, g, plan) -> None:
    """DivergenceError if g_hat is not finite (else return)."""
    if not bool(torch.isfinite(g).all()):
        raise DivergenceError(k + 1, "g_hat (the chain statistics) is not finite",
                              divergence_cause(plan.sampler, plan.energy, float(plan.dts[max(k - 1, 0)]),
                                               plan.mobility))


def retune(run, schedule, n_steps, first: int) -> None:
    """Estimate tau at the current theta and set the learning rates of updates >= ``first``."""
    tau, method = run.ctx.relaxation_time()
    lr = schedule.at_tau(tau).discretise(n_steps).lr
    run.lrs[first:] = lr[first:]
    run.taus.append((run.k, tau, method))


class Paths:
    """The functions one replica's step calls, chosen once from the plan (no probing in the loop).

    ``g_hat(k, theta) -> (g, stats)``, ``next_theta(k, theta, g, stats) -> (lr, theta_new)``,
    ``host(theta_new)`` (the one host transfer of an update) and ``approx(theta, theta_new, g, host)``
    (the increment (theta_new - theta) . g of the approximate objective).
    """

    def __init__(self, plan, run):
        energy, state, data = plan.energy, run.state, run.data
        self.plan, self.run = plan, run
        # the rows of the data term: every sample in the chains' dtype (fused), a minibatch, or none
        samples = data.samples
        if plan.fused:
            samples = samples.to(device=state.x.device, dtype=state.x.dtype)
        if plan.data_rows == "minibatch":
            n_data, bsize, dgen = samples.shape[0], plan.batch_size, run.data_gen

            def data_rows():   # drawn with replacement: O(batch_size), the replica's own data generator
                idx = torch.randint(n_data, (bsize,), generator=dgen, device=dgen.device).to(samples.device)
                return samples[idx]
        elif plan.data_rows == "all":
            def data_rows():
                return samples
        else:
            data_rows = None

        if data_rows is None:
            def data_grad(th):   # E_data[d_theta E]: cached (E = theta . phi) or from the data moments
                return _backends.data_mean_grad_theta(energy, data, th)
        else:
            def data_grad(th):
                return energy.mean_grad_theta(data_rows(), th).to(torch.float64)

        pre, mean_grad_theta = run.pre, state.mean_grad_theta
        if plan.fused:
            def g_hat(k, theta):   # one backward over data and chains together
                return energy.grad_hat(data_rows(), state.x, theta), None
        elif pre is None:
            def g_hat(k, theta):
                return data_grad(theta) - mean_grad_theta(energy, theta), None
        else:
            ctx, stats_kw = run.ctx, run.stats_kw

            def g_hat(k, theta):   # the statistics the preconditioner needs come with the chain mean
                ctx.theta, ctx.k, ctx.lrs = theta, k, run.lrs
                stats = state.grad_theta_stats(energy, theta, pre.needs, pre.rows, ctx.gen, **stats_kw)
                g = data_grad(theta) - stats.mean
                raise_if_g_not_finite(k, g, plan)   # before the preconditioner sees the statistics
                return g, stats
        self.g_hat = g_hat

        if plan.path is not None:
            path_t = torch.as_tensor(plan.path, dtype=torch.float64, device=run.theta.device)

            def next_theta(k, theta, g, stats):   # open-loop replay of a prescribed path
                return math.nan, path_t[k + 1]
        else:
            online = plan.tau_mode == "online"
            # online: the rates are retuned during the run, so they are read from run.lrs each update
            lr_list = run.lrs.tolist() if run.lrs is not None and not online else None
            refresh = plan.schedule.params["tau_refresh"] if online else 0

            def rate(k, theta, dt):
                if online and k > 1 and dt > 0 and (k - 1) % refresh == 0:
                    run.ctx.theta = theta
                    with run.once:
                        retune(run, plan.schedule, plan.n_steps, k)
                return lr_list[k] if lr_list is not None else float(run.lrs[k])

            dts = plan.dts.tolist()
            if pre is None:
                def next_theta(k, theta, g, stats):
                    lr = rate(k, theta, dts[k])
                    return lr, theta - lr * g   # (not add(alpha=-lr): user loops replay this rounding)
            else:
                def next_theta(k, theta, g, stats):
                    lr = rate(k, theta, dts[k])
                    with run.once:
                        pre.observe(stats, run.ctx)
                    return lr, theta - lr * pre.apply(g)
        self.next_theta = next_theta

        if plan.small:   # few parameters: host floats are cheaper than tensor ops
            self.prev_host = run.theta.tolist()

            def host(theta_new):
                return theta_new.tolist()

            def finite(th_host):
                return all(map(math.isfinite, th_host))

            def approx(theta, theta_new, g, th_host):
                inc = sum((a - b) * c for a, b, c in zip(th_host, self.prev_host, g.tolist()))
                self.prev_host = th_host
                return inc
        else:
            def host(theta_new):
                return theta_new.cpu().numpy()

            def finite(th_host):
                return bool(np.isfinite(th_host).all())

            def approx(theta, theta_new, g, th_host):
                return float(torch.dot(theta_new - theta, g))
        self.host, self.finite, self.approx = host, finite, approx


def step(run, paths: Paths, k: int, dt: float) -> tuple[float, object]:
    """Update k of one replica: g_hat, theta, work (chains frozen), move and heat. Returns (lr, host theta)."""
    plan, state = paths.plan, run.state
    energy = plan.energy
    theta = run.theta
    g, stats = paths.g_hat(k, theta)                                  # 1. g_hat
    lr, theta_new = paths.next_theta(k, theta, g, stats)              # 2. theta_new = theta - lr P g
    th_host = paths.host(theta_new)                                   # the one host transfer
    if not paths.finite(th_host):
        raise_if_g_not_finite(k, g, plan)
        raise DivergenceError(k + 1, "theta is not finite", "the learning rate is too large")
    msg = energy.check_theta(theta_new)
    if msg:
        raise DivergenceError(k + 1, msg, "the learning rate is too large for this parameter")
    state.apply_update(energy, theta, theta_new)                      # 3. work, chains frozen
    run.loss_approx += paths.approx(theta, theta_new, g, th_host)
    run.theta = theta_new
    if dt > 0:
        state.move(energy, theta_new, dt, plan.mobility, plan.sampler, run.gen)   # 4. heat at fixed theta
        run.t_now += dt
    return lr, th_host


def run_updates(run, paths: Paths, *, stop: Callable[[], bool] | None = None, observers=(),
                tick: Callable | None = None, save: Callable | None = None, checkpoint_path=None) -> None:
    """The loop of one replica (continues from ``run.k``): stop requests, steps, history rows,
    observers, progress and periodic checkpoints; then the post-run checks and F-dependent columns."""
    plan, state = paths.plan, run.state
    dts = plan.dts
    n_updates = len(dts)
    nan = math.nan

    def record(k, lr, dt, th_host):
        work, heat = state.mean_work_heat()
        if not (abs(work) < LEDGER_LIMIT and abs(heat) < LEDGER_LIMIT):
            cause = (divergence_cause(plan.sampler, plan.energy, dt or float(dts[max(k - 2, 0)]), plan.mobility)
                     if plan.path is None and plan.sampler.name == "euler" else
                     "the learning rate or chain step is too large for this energy")
            raise DivergenceError(k, f"the ledger left the finite range (mean work {work:.3g}, mean heat "
                                  f"{heat:.3g} kT per chain): chains escaping to huge energies", cause)
        if run.rows is not None:   # F-dependent columns are filled after the updates (fill_losses)
            run.pending.append([k, run.t_now, lr, dt, *th_host, *state.chain_mean_list(), work, heat,
                                nan, nan, nan, nan, run.loss_approx])
            if len(run.pending) >= 256:
                run.flush_rows()

    if run.k == 0 and run.n_rows == 0:
        record(0, 0.0, 0.0, paths.host(run.theta))
    record_every, every = plan.record_every, plan.checkpoint_every
    dt_list = np.asarray(dts, dtype=float).tolist()
    for k in range(run.k, n_updates):
        if stop is not None and stop():
            if save is not None:
                save(run)
            raise Interrupted(k, checkpoint_path if save is not None else None)
        dt = dt_list[k]
        lr, th_host = step(run, paths, k, dt)
        if run.thetas is not None:
            run.thetas[k + 1] = th_host
        if (k + 1) % record_every == 0 or k + 1 == n_updates:
            record(k + 1, lr, dt, th_host)
        run.k = k + 1
        for obs in observers:
            obs(k + 1, run.theta, state)
        if tick is not None and (run.k % 16 == 0 or run.k == n_updates):
            tick(run.k, run)
        if every and save is not None and run.k % every == 0 and run.k < n_updates:
            save(run)
    if not state.finite():
        raise DivergenceError(n_updates, "chain energies are not finite", "the chain step is too large")
    run.flush_rows()
    run.fill_losses()
