"""Minimal-dissipation learning rates for your own PyTorch loop.

Two lines for a practitioner (``total_updates`` = the optimizer steps you plan; nothing else):

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = MinimalDissipationLR(opt, total_updates=2000)      # call sched.step() after opt.step()

The loop keeps its shape (every update is followed by your usual chain move; no impulse updates).
The time unit is one update, and the rate before update k is

    lr_k = base_lr * r_k / mean_j(r_j),   r_k = 1 / (T - (k + 1/2) + 2 tau)     (T = total_updates)

the paper's alpha(t) (theory.md section 4) sampled at the midpoints and normalised so that **the
run's mean lr equals the optimizer's lr** (a lr tuned for constant-lr training transfers). tau is
the chains' relaxation time in updates: given as ``tau=``, or assumed equal to T (then r_k rises
only 1.5x over the run). For step-normalised optimizers (Adam, RMSprop, ...; ``STEP_NORMALISED``)
without ``tau=`` or ``tracker=`` the rate is constant: their step is about lr whatever g_hat's
size, so the paper's interior (constant speed, a rate that rises only to offset a shrinking
g_hat) is a constant lr, and the rising alpha(t) measurably added dissipation and hurt the NLL
(docs/own_loop.md). With a ``WorkTracker`` passed as ``tracker=`` the rate is measured
instead: ``adapt="power"`` (default then) keeps the excess power lr_k^2 c_k constant with the
friction c_k measured along the path (lr ~ c^-1/2, normalised by its running mean);
``adapt="tau"`` uses alpha(t) with the tracker's measured tau. The impulses of the exact harmonic
optimum are off by default for this mode (``start_impulse=True`` / ``final_impulse=True`` fold
them into the first / last update's lr): a final impulse is a large last step after which the chains never move, and on
neural EBMs it destroyed the model (issue 17: test NLL 2.2 -> 5.2).

The expert mode is the canonical discretisation of ``mindiss.train``:

``MinimalDissipation`` is a ``torch.optim.Optimizer``:

    theta_{k+1} = theta_k - lr_k P_k g_hat,   g_hat = E_data[d_theta E] - E_chains[d_theta E]

with ``g_hat`` the gradient of the contrastive-divergence loss ``E_data[E] - E_chains[E]`` that
your loop already puts into ``p.grad`` (``loss.backward()``), ``lr_k`` the canonical
discretisation of the minimal-dissipation rate (theory.md sections 3-4)

    alpha(t) = tau/(T + 2 tau) delta(t) + 1/(T - t + 2 tau) + 1/2 delta(t - T)

over a planned number of updates (n interior updates plus an impulse at each end: n + 2), and
``P_k`` the identity or the inverse Fisher information I = Cov_chains[d_theta E] estimated from
per-chain parameter gradients. ``MinimalDissipationLR`` gives the same rates to an optimizer you
keep (an ``lr_scheduler``). Units: kT = 1, time in the units of the chains' mobility.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from ..errors import InputError, require_positive, require_positive_int
from ..rates.preconditioners import Fisher, GradStats
from ..rates.schedules import DiscreteSchedule, Schedule, alpha, optimal_harmonic

FISHER_KINDS = (None, "full", "diag", "lowrank")
#: optimizers whose step is about lr per parameter whatever the gradient's size
STEP_NORMALISED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam,
                   torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adadelta)
F64 = torch.float64


# ---------------------------------------------------------------------------- the plan

def plan(duration=None, n_steps=None, *, tau=None, variance=None, mobility=1.0, schedule=None) -> DiscreteSchedule:
    """The n + 2 learning-rate factors of the minimal-dissipation plan (impulse, n interior, impulse).

    Exactly one of: ``tau`` (alpha(t) of theory.md section 4: dimensionless factors, multiplied by
    the optimizer's ``lr``, which stands for I^-1 where no Fisher is used), ``variance`` (with
    ``mobility``: the exact harmonic optimum eta*(t) = s alpha(t), tau = s / mu, identical to
    ``mindiss.train``'s ``optimal_harmonic`` rates) or ``schedule`` (any ``mindiss.schedules``
    Schedule, or a DiscreteSchedule used as is).
    """
    given = [name for name, v in (("tau", tau), ("variance", variance), ("schedule", schedule)) if v is not None]
    if len(given) != 1:
        raise InputError("give exactly one of tau= (the chains' relaxation time), variance= (harmonic trap, with "
                         f"mobility=) or schedule= (a mindiss schedule); got {given or 'none'}")
    if isinstance(schedule, DiscreteSchedule):
        if n_steps is not None and n_steps + 2 != schedule.n_updates:
            raise InputError(f"n_steps={n_steps} disagrees with the schedule's {schedule.n_updates} updates")
        return schedule
    if duration is None or n_steps is None:
        raise InputError("duration= and n_steps= are required (the plan has n_steps + 2 updates over time duration)")
    T = require_positive("duration", duration)
    n = require_positive_int("n_steps", n_steps)
    if schedule is not None:
        if not isinstance(schedule, Schedule):
            raise InputError(f"schedule must be a mindiss Schedule or DiscreteSchedule, got {type(schedule).__name__}")
        if not math.isclose(schedule.duration, T, rel_tol=1e-12):
            raise InputError(f"duration {T} differs from the schedule's duration {schedule.duration}")
        return schedule.discretise(n)
    if variance is not None:
        return optimal_harmonic(variance, mobility, T).discretise(n)
    return alpha(T, tau).discretise(n)


def _plan_groups_keys(d: DiscreteSchedule) -> dict:
    return {"rates": tuple(float(v) for v in d.lr), "move_times": tuple(float(v) for v in d.dt)}


# ---------------------------------------------------------------------------- per-chain gradients

def per_chain_grads(energy, params, chains: torch.Tensor, *, rows: int | None = None,
                    gen: torch.Generator | None = None) -> torch.Tensor:
    """G_i = d_theta E(x_i) for the chains x_i, float64 (n, P), columns in ``params`` order, flattened.

    ``energy``: a ``torch.nn.Module`` holding ``params`` (evaluated with ``torch.func``:
    ``vmap(grad(functional_call))``, one pass), or any callable x -> (N,) energies that closes over
    ``params`` (one backward per chain). ``rows``: use a random subsample of that many chains,
    drawn with ``gen`` (required then).
    """
    params = list(params)
    x = chains.detach()
    if rows is not None and rows < x.shape[0]:
        if not isinstance(gen, torch.Generator):
            raise InputError("rows= subsamples the chains at random: pass gen=torch.Generator()")
        idx = torch.randperm(x.shape[0], generator=gen, device=gen.device)[:rows].to(x.device)
        x = x[idx]
    sizes = [p.numel() for p in params]
    out = torch.zeros((x.shape[0], sum(sizes)), dtype=F64, device=x.device)
    if isinstance(energy, torch.nn.Module):
        from torch.func import functional_call, grad, vmap

        named = {id(p): n for n, p in energy.named_parameters()}
        mine = {named[id(p)]: p.detach() for p in params if id(p) in named}
        fixed = {n: p.detach() for n, p in energy.named_parameters() if n not in mine}

        def one(p, xi):
            return functional_call(energy, {**fixed, **p}, (xi.unsqueeze(0),)).sum()

        try:
            gs = vmap(grad(one), in_dims=(None, 0))(mine, x)
        except Exception:  # not vmap-able (in-place ops, data-dependent control flow): loop below
            gs = None
        if gs is not None:
            col = 0
            for p, size in zip(params, sizes):
                if id(p) in named:
                    out[:, col:col + size] = gs[named[id(p)]].reshape(x.shape[0], size)
                col += size
            return out
    for i in range(x.shape[0]):
        with torch.enable_grad():
            e = energy(x[i:i + 1]).sum()
            gs = torch.autograd.grad(e, params, allow_unused=True)
        col = 0
        for g, size in zip(gs, sizes):
            if g is not None:
                out[i, col:col + size] = g.reshape(-1)
            col += size
    return out


_per_chain_grads = per_chain_grads  # for ``step``, whose keyword argument shadows the name


# ---------------------------------------------------------------------------- practitioner plan

def rate_factors(total_updates: int, tau: float, *, start: int = 0, stop: int | None = None,
                 start_impulse: bool = False, final_impulse: bool = False) -> list[float]:
    """r_k / mean_j r_j for k = start..stop-1, r_k = 1 / (T - (k + 1/2) + 2 tau): alpha(t) at unit time
    steps, normalised to mean 1 over the whole run (k = 0..T-1; the mean by the digamma sum
    sum_k 1/(a + k) = psi(a + T) - psi(a), a = 2 tau + 1/2). The impulses tau / (T + 2 tau) and 1/2
    (same normalisation) are added to the first / last update's factor when asked for."""
    T = require_positive_int("total_updates", total_updates)
    tau = float(tau)
    if not (tau > 0):
        raise InputError(f"tau must be > 0 (the chains' relaxation time in updates), got {tau!r}")
    stop = T if stop is None else min(int(stop), T)
    if math.isinf(tau):
        out = [1.0] * (stop - start)
        return out
    a = 2.0 * tau + 0.5
    psi = torch.special.digamma(torch.tensor([a + T, a], dtype=F64))
    norm = float(psi[0] - psi[1]) / T
    out = [1.0 / ((T - (k + 0.5) + 2.0 * tau) * norm) for k in range(start, stop)]
    if start_impulse and start == 0 and out:
        out[0] += tau / (T + 2.0 * tau) / norm
    if final_impulse and stop == T and out:
        out[-1] += 0.5 / norm
    return out


class _Planner:
    """The practitioner plan shared by MinimalDissipationLR and MinimalDissipation: the lr factor of
    update k. ``adapt``: "none" (alpha(t) with tau explicit or T), "tau" (alpha(t) with the tracker's
    measured tau, re-planned as it changes) or "power" (constant excess power, from the tracker)."""

    WINDOW = 20          # updates per friction estimate (and the warm-up at factor 1)
    CLIP = 3.0           # factors stay within [1/CLIP, CLIP] of the base lr

    def __init__(self, total_updates, tau, tracker, start_impulse, final_impulse, adapt=None,
                 step_normalised: bool = False):
        self.total_updates = require_positive_int("total_updates", total_updates)
        self.step_normalised = bool(step_normalised)
        if tau is not None:
            require_positive("tau", tau)
        if tracker is not None and not callable(getattr(tracker, "relaxation_time", None)):
            raise InputError(f"tracker must be a mindiss WorkTracker, got {type(tracker).__name__}")
        if adapt is None:
            adapt = "power" if tracker is not None and tau is None else "none"
        if adapt not in ("none", "tau", "power"):
            raise InputError(f"adapt must be 'none', 'tau' or 'power', got {adapt!r}")
        if adapt != "none" and tracker is None:
            raise InputError(f"adapt={adapt!r} needs tracker= (a WorkTracker of this loop)")
        self.tau, self.tracker, self.adapt = (None if tau is None else float(tau)), tracker, adapt
        self.start_impulse, self.final_impulse = bool(start_impulse), bool(final_impulse)
        self.factors: dict[int, float] = {}
        self._raw_sum = 0.0

    def current_tau(self) -> float:
        if self.tau is not None:
            return self.tau
        if self.adapt == "tau":
            t = self.tracker.relaxation_time()
            if math.isfinite(t) and t > 0:
                return float(t)
        if self.adapt == "power" or self.step_normalised:
            return math.inf
        return float(self.total_updates)

    def _power_factor(self, k: int) -> float:
        """f_k ~ c_k^(-1/2): constant excess power lr_k^2 c_k (Sivak-Crooks), with the friction along the
        path c_j = Var_i(w_ij) / (2 f_j^2) from the tracker's last WINDOW updates; normalised by the
        running mean of c^(-1/2) so that the mean lr stays the base lr; 1 during the warm-up."""
        rows = [row for row in self.tracker.ledger.history[-2 * self.WINDOW:]
                if 1 <= row[0] <= k and int(row[0]) - 1 in self.factors] if self.tracker.ledger else []
        rows = rows[-self.WINDOW:]
        if k < self.WINDOW or len(rows) < self.WINDOW // 2:
            return 1.0
        c = sum(row[2] / 2.0 / self.factors[int(row[0]) - 1] ** 2 for row in rows) / len(rows)
        if not (c > 0 and math.isfinite(c)):
            return 1.0
        raw = c ** -0.5
        self._raw_sum += raw
        mean_raw = self._raw_sum / (k - self.WINDOW + 1)
        return min(max(raw / mean_raw, 1.0 / self.CLIP), self.CLIP)

    def factor(self, k: int) -> float:
        if k in self.factors and k < self.total_updates:
            return self.factors[k]
        T = self.total_updates
        tau = self.current_tau()
        if k >= T:    # beyond the plan: keep the last interior rate (raise total_updates to re-plan)
            f = rate_factors(T, tau, start=T - 1)[0] if self.adapt != "power" else self.factors.get(k - 1, 1.0)
        elif self.adapt == "power":
            f = self._power_factor(k)
            f += rate_factors(T, tau, start=k, stop=k + 1, start_impulse=self.start_impulse,
                              final_impulse=self.final_impulse)[0] - 1.0 if (
                self.start_impulse or self.final_impulse) else 0.0
        else:
            f = rate_factors(T, tau, start=k, stop=k + 1, start_impulse=self.start_impulse,
                             final_impulse=self.final_impulse)[0]
        self.factors[k] = f
        return f

    def set_total(self, total_updates: int, done: int) -> None:
        """Re-plan from update ``done`` on for a new total (past factors are kept)."""
        self.total_updates = total_updates
        self.factors = {k: f for k, f in self.factors.items() if k < done}

    def state(self) -> dict:
        return {"total_updates": self.total_updates, "tau": self.tau, "start_impulse": self.start_impulse,
                "final_impulse": self.final_impulse, "adapt": self.adapt, "raw_sum": self._raw_sum,
                "factor_keys": list(self.factors), "factor_values": list(self.factors.values())}

    def load(self, sd: dict) -> None:
        self.total_updates, self.tau = int(sd["total_updates"]), sd["tau"]
        self.start_impulse, self.final_impulse = bool(sd["start_impulse"]), bool(sd["final_impulse"])
        self.adapt, self._raw_sum = sd.get("adapt", self.adapt), float(sd.get("raw_sum", 0.0))
        self.factors = dict(zip((int(k) for k in sd.get("factor_keys", [])), sd.get("factor_values", [])))


def _expert_plan(total_updates, duration, n_steps, tau, variance, mobility, schedule) -> DiscreteSchedule | None:
    """The expert plan (``plan``) when duration= / n_steps= / variance= / schedule= are given, else None (the
    practitioner mode, ``total_updates``); exactly one of the two modes must be asked for."""
    expert = any(v is not None for v in (duration, n_steps, variance, schedule))
    if expert == (total_updates is not None):
        raise InputError("give total_updates= (the optimizer steps you plan; the practitioner mode) or the "
                         "expert plan duration=, n_steps= with tau=/variance=/schedule=, not both")
    return plan(duration, n_steps, tau=tau, variance=variance, mobility=mobility, schedule=schedule) if expert else None


# ---------------------------------------------------------------------------- the optimizer

class MinimalDissipation(torch.optim.Optimizer):
    """theta_{k+1} = theta_k - lr_k P_k g_hat: the minimal-dissipation learning rate, kT = 1.

    ``params``: tensors or param groups, as for any torch optimizer. ``g_hat`` is ``p.grad`` (the
    gradient of your CD loss E_data[E] - E_chains[E]). ``P_k``: identity, or with ``fisher`` the
    inverse Fisher information (I + lambda)^-1, I = Cov_chains[d_theta E], estimated by
    ``mindiss.preconditioners.Fisher`` (the library's one Fisher: "full", "diag" or "lowrank")
    from per-chain gradients given by ``step(per_chain_grads=G)``, ``set_fisher_samples(G)``, or
    computed from ``energy`` by ``step(chains=x)``.

    Practitioner mode (``total_updates=``): lr_k = lr * r_k with the normalised factors of
    ``MinimalDissipationLR`` (mean lr over the run = ``lr``; ``tau=``, or ``tracker=`` with ``adapt``;
    impulses off unless asked for); every update is an ordinary update followed by your usual
    chain move; ``total_updates`` may be raised mid-run (``set_total_updates``).

    Expert mode (``duration``, ``n_steps`` with ``tau`` | ``variance``/``mobility`` | ``schedule``): the
    canonical plan of ``mindiss.train`` with n + 2 updates (impulse, n interior, impulse);
    ``last_move_time`` is the chain time after the update just taken (0 after an impulse). There
    ``lr`` multiplies alpha_k: without a Fisher it stands for I^-1 (s for the harmonic trap).

    ``damping``: lambda, a number or "auto" (``relative_damping`` x mean diagonal of I).
    ``fisher_rows``: chains subsampled (with ``gen``) when the optimizer computes G itself.
    ``state_dict()`` holds the step count, the plan and the Fisher estimate (float64).
    """

    def __init__(self, params, duration=None, n_steps=None, *, total_updates=None, tau=None, variance=None,
                 mobility=1.0, schedule=None, tracker=None, adapt=None, start_impulse: bool = False,
                 final_impulse: bool = False, lr: float = 1.0, fisher=None, damping="auto",
                 relative_damping: float = 1e-3, energy=None, fisher_rows: int | None = None,
                 gen: torch.Generator | None = None, cg_tol: float = 1e-8, cg_max_iter: int = 500):
        d = _expert_plan(total_updates, duration, n_steps, tau, variance, mobility, schedule)
        if d is not None:
            self.planner = None
            plan_keys = _plan_groups_keys(d)
        else:
            self.planner = _Planner(total_updates, tau, tracker, start_impulse, final_impulse, adapt)
            plan_keys = {"rates": (), "move_times": ()}
        if variance is not None and fisher is not None:
            raise InputError("variance= gives the harmonic optimum s alpha(t), which already contains I^-1 = s: "
                             "with a Fisher use tau= (tau = s / mu for the trap) and lr=1")
        _check_group_options(lr, fisher, damping)
        if not (isinstance(relative_damping, (int, float)) and relative_damping >= 0):
            raise InputError(f"relative_damping must be a number >= 0, got {relative_damping!r}")
        if fisher_rows is not None:
            require_positive_int("fisher_rows", fisher_rows)
        if gen is not None and not isinstance(gen, torch.Generator):
            raise InputError(f"gen must be a torch.Generator, got {type(gen).__name__}")
        self.energy, self.fisher_rows, self.gen = energy, fisher_rows, gen
        self.relative_damping = float(relative_damping)
        self.cg_tol, self.cg_max_iter = cg_tol, cg_max_iter
        self.last_move_time = 0.0
        defaults = {"lr": float(lr), "fisher": fisher, "damping": damping, "step": 0, **plan_keys}
        super().__init__(params, defaults)

    def __repr__(self) -> str:
        planned = self.n_updates
        lines = [f"{type(self).__name__}({self.updates_done} of {planned} planned updates done)"]
        for i, g in enumerate(self.param_groups):
            lines.append(f"  group {i}: lr={g['lr']}, fisher={g['fisher']}, damping={g['damping']}, "
                         f"{len(g['params'])} tensors")
        return "\n".join(lines)

    # -- plan bookkeeping ------------------------------------------------------------------
    @property
    def n_updates(self) -> int:
        """The planned number of ``step()`` calls (expert mode: n + 2, impulses included)."""
        if self.planner is not None:
            return self.planner.total_updates
        return len(self.param_groups[0]["rates"])

    @property
    def updates_done(self) -> int:
        return int(self.param_groups[0]["step"])

    @property
    def next_move_time(self) -> float:
        """Expert mode: chain time to simulate after the next update (0 for an impulse)."""
        k = self.updates_done
        if self.planner is not None:
            return math.nan
        return self.param_groups[0]["move_times"][k] if k < self.n_updates else 0.0

    def set_total_updates(self, total_updates: int) -> None:
        """Raise (or lower, not below the updates done) the plan; the remaining rates are re-planned."""
        if self.planner is None:
            raise InputError("set_total_updates is for the practitioner mode (total_updates=); the expert plan is "
                             "fixed: build a new optimizer")
        n = require_positive_int("total_updates", total_updates)
        if n < self.updates_done:
            raise InputError(f"total_updates={n} is below the {self.updates_done} updates already taken")
        self.planner.set_total(n, self.updates_done)

    def _rate(self, group, k: int) -> float:
        if self.planner is not None:
            return self.planner.factor(k)
        return group["rates"][k]

    def add_param_group(self, param_group: dict) -> None:
        if self.param_groups:
            param_group.setdefault("step", self.updates_done)
            for key in ("rates", "move_times"):
                param_group.setdefault(key, self.param_groups[0][key])
        _check_group_options(param_group.get("lr", self.defaults["lr"]),
                             param_group.get("fisher", self.defaults["fisher"]),
                             param_group.get("damping", self.defaults["damping"]))
        super().add_param_group(param_group)

    # -- Fisher (mindiss.preconditioners.Fisher, one per group) ---------------------------------
    def _columns(self):
        """(group, start, stop) column ranges of each group in the flattened parameter order."""
        col = 0
        for group in self.param_groups:
            size = sum(p.numel() for p in group["params"])
            yield group, col, col + size
            col += size

    def _fisher(self, group) -> Fisher:
        st = self.state[group["params"][0]]
        if "fisher_pre" not in st:
            kind = group["fisher"]
            size = sum(p.numel() for p in group["params"])
            st["fisher_pre"] = Fisher(kind, damping=group["damping"], relative_damping=self.relative_damping,
                                      rank=max(size, 1), cg_tol=self.cg_tol, cg_max_iter=self.cg_max_iter,
                                      max_blocks=1)
        return st["fisher_pre"]

    def set_fisher_samples(self, per_chain_grads) -> None:
        """I = Cov_chains[d_theta E] per group from G (n, P): a tensor with columns in the flattened order
        of all parameters (groups in order), or a sequence of per-parameter tensors (n, *p.shape)."""
        G = self._as_matrix(per_chain_grads)
        if G.shape[0] < 2:
            raise InputError(f"the Fisher needs per-chain gradients of at least 2 chains, got {G.shape[0]}")
        for group, a, b in self._columns():
            if group["fisher"] is None:
                continue
            g = G[:, a:b].to(group["params"][0].device)
            self._fisher(group).observe(GradStats(mean=g.mean(0), samples=g), None)

    def _as_matrix(self, G) -> torch.Tensor:
        params = [p for group in self.param_groups for p in group["params"]]
        total = sum(p.numel() for p in params)
        if torch.is_tensor(G):
            if G.ndim != 2 or G.shape[1] != total:
                raise InputError(f"per-chain gradients must have shape (n_chains, {total}) (all parameters "
                                 f"flattened in order), got {tuple(G.shape)}")
            return G.detach().to(F64)
        G = list(G)
        if len(G) != len(params):
            raise InputError(f"per-chain gradients: {len(G)} tensors for {len(params)} parameters")
        cols = []
        for g, p in zip(G, params):
            if tuple(g.shape[1:]) != tuple(p.shape):
                raise InputError(f"per-chain gradient of shape {tuple(g.shape)} for a parameter of shape "
                                 f"{tuple(p.shape)}: expected (n_chains, *{tuple(p.shape)})")
            cols.append(g.detach().reshape(g.shape[0], -1).to(F64))
        return torch.cat(cols, dim=1)

    def _precondition(self, group, g: torch.Tensor) -> torch.Tensor:
        st = self.state[group["params"][0]]
        if "fisher_pre" not in st or st["fisher_pre"].estimate is None:
            raise InputError(f"fisher={group['fisher']!r} needs per-chain gradients before the first step: pass "
                             "step(per_chain_grads=G), call set_fisher_samples(G), or give energy= and call "
                             "step(chains=x)")
        return st["fisher_pre"].apply(g)

    # -- the update ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None, *, per_chain_grads=None, chains=None):
        """One update: p -= lr_k P_k p.grad for every parameter (p.grad = g_hat).

        ``per_chain_grads`` (n, P) or ``chains`` (with ``energy=``) refresh the Fisher first. Returns
        the closure's loss, as torch optimizers do."""
        k = self.updates_done
        if self.planner is None and k >= self.n_updates:
            raise InputError(f"MinimalDissipation planned {self.n_updates} updates (impulse, {self.n_updates - 2} "
                             f"interior, impulse) and all were taken: step() called for update {k + 1}. Build a "
                             "new optimizer (or use the practitioner mode, total_updates=, which can be extended)")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        needs_fisher = any(group["fisher"] is not None for group in self.param_groups)
        if chains is not None and per_chain_grads is None and needs_fisher:
            if self.energy is None:
                raise InputError("step(chains=x) computes per-chain gradients from energy=: give it to the optimizer")
            params = [p for group in self.param_groups for p in group["params"]]
            per_chain_grads = _per_chain_grads(self.energy, params, chains, rows=self.fisher_rows, gen=self.gen)
        if per_chain_grads is not None:
            self.set_fisher_samples(per_chain_grads)
        factor = None
        for group in self.param_groups:
            if factor is None or self.planner is None:
                factor = self._rate(group, k)
            lr = group["lr"] * factor
            params = [p for p in group["params"] if p.grad is not None]
            if group["fisher"] is None:
                for p in params:
                    if p.grad.is_sparse:
                        raise InputError("MinimalDissipation does not support sparse gradients")
                    p.sub_(lr * p.grad)
            elif params:
                g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(F64)
                               for p in group["params"]])
                direction = self._precondition(group, g)
                col = 0
                for p in group["params"]:
                    n = p.numel()
                    if p.grad is not None:
                        p.sub_(lr * direction[col:col + n].reshape(p.shape).to(p.dtype))
                    col += n
            group["step"] = k + 1
        self.last_move_time = (float(self.param_groups[0]["move_times"][k]) if self.planner is None else math.nan)
        return loss

    # -- exact resume ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        sd = super().state_dict()
        for st in sd["state"].values():
            pre = st.pop("fisher_pre", None)
            if pre is not None:
                st["fisher_state"] = {k: v for k, v in pre.state_dict().items() if k != "energy"}
        sd["planner"] = None if self.planner is None else self.planner.state()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, but the Fisher estimate keeps float64 (torch casts state to the parameter dtype)."""
        state_dict = dict(state_dict)
        planner = state_dict.pop("planner", None)
        fisher_states = {idx: st.get("fisher_state") for idx, st in state_dict["state"].items()}
        state_dict["state"] = {idx: {k: v for k, v in st.items() if k != "fisher_state"}
                               for idx, st in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        if planner is not None and self.planner is not None:
            self.planner.load(planner)
        params = [p for group in self.param_groups for p in group["params"]]
        for idx, fs in fisher_states.items():
            if fs is None or not isinstance(idx, int):
                continue
            group = next(g for g in self.param_groups if any(p is params[idx] for p in g["params"]))
            pre = self._fisher(group)
            pre.load_state_dict(_clone_state(fs))
        k = self.updates_done
        self.last_move_time = (float(self.param_groups[0]["move_times"][k - 1]) if self.planner is None and k
                               else (0.0 if self.planner is None else math.nan))


def _clone_state(v):
    if torch.is_tensor(v):
        return v.detach().clone()
    if isinstance(v, list):
        return [_clone_state(a) for a in v]
    if isinstance(v, tuple):
        return tuple(_clone_state(a) for a in v)
    if isinstance(v, dict):
        return {k: _clone_state(a) for k, a in v.items()}
    return v


def _check_group_options(lr, fisher, damping) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr >= 0 and math.isfinite(lr)):
        raise InputError(f"lr must be a finite number >= 0, got {lr!r}")
    if fisher not in FISHER_KINDS:
        raise InputError(f"fisher must be one of {FISHER_KINDS}, got {fisher!r}")
    if damping != "auto" and not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
        raise InputError(f"damping must be 'auto' or a number >= 0, got {damping!r}")


# ---------------------------------------------------------------------------- the scheduler

class MinimalDissipationLR(LRScheduler):
    """lr_k = base_lr * r_k for an optimizer you keep; call ``step()`` after every ``optimizer.step()``.

    Practitioner mode: ``MinimalDissipationLR(optimizer, total_updates)``. r_k (``rate_factors``) is
    alpha(t) at unit time steps normalised so that the run's mean lr is the optimizer's lr. tau (the
    chains' relaxation time, in updates): ``tau=``, else T (for step-normalised optimizers such as
    Adam: a constant lr, see the module docstring). ``tracker=`` (a WorkTracker of this loop)
    with ``adapt="power"`` (its default): constant excess power, lr ~ c^-1/2 with the friction c
    measured along the path; ``adapt="tau"``: alpha(t) with the measured tau (see ``_Planner``).
    ``start_impulse`` / ``final_impulse`` (default
    off) fold the harmonic optimum's impulses into the first / last update's lr. ``set_total_updates``
    raises the plan mid-run (the remaining rates are re-planned); beyond the plan the last rate is
    kept.

    Expert mode (``duration=``, ``n_steps=`` with ``tau=`` | ``variance=`` | ``schedule=``): the n + 2
    rates of ``plan`` (impulses as separate updates; ``move_time(k)`` is the chain time after update
    k). With ``variance=`` (harmonic trap) and ``SGD(lr=1)`` the rates are ``mindiss.train``'s.
    """

    def __init__(self, optimizer, total_updates=None, *, tau=None, tracker=None, adapt=None,
                 start_impulse: bool = False,
                 final_impulse: bool = False, duration=None, n_steps=None, variance=None, mobility=1.0,
                 schedule=None, last_epoch: int = -1):
        d = _expert_plan(total_updates, duration, n_steps, tau, variance, mobility, schedule)
        if d is not None:
            self.rates = [float(v) for v in d.lr]
            self.move_times = [float(v) for v in d.dt]
            self.planner = None
        else:
            self.rates, self.move_times = [], []
            self.planner = _Planner(total_updates, tau, tracker, start_impulse, final_impulse, adapt,
                                    step_normalised=isinstance(optimizer, STEP_NORMALISED))
        super().__init__(optimizer, last_epoch)

    @property
    def n_updates(self) -> int:
        return self.planner.total_updates if self.planner is not None else len(self.rates)

    @property
    def tau(self) -> float:
        """The tau (updates) of the current plan."""
        return self.planner.current_tau() if self.planner is not None else math.nan

    def set_total_updates(self, total_updates: int) -> None:
        """Raise (or lower, not below the updates done) the plan; the remaining rates are re-planned."""
        if self.planner is None:
            raise InputError("set_total_updates is for the practitioner mode (total_updates=)")
        n = require_positive_int("total_updates", total_updates)
        if n < self.last_epoch:
            raise InputError(f"total_updates={n} is below the {self.last_epoch} updates already taken")
        self.planner.set_total(n, self.last_epoch)
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def move_time(self, k: int) -> float:
        return self.move_times[k]

    def get_lr(self):
        k = self.last_epoch
        if self.planner is not None:
            f = self.planner.factor(k)
            return [base * f for base in self.base_lrs]
        if k > self.n_updates:
            raise InputError(f"MinimalDissipationLR planned {self.n_updates} updates; scheduler.step() was called "
                             f"{k} times (one more than the plan allows after its last update)")
        if k == self.n_updates:
            return [0.0 for _ in self.base_lrs]
        return [base * self.rates[k] for base in self.base_lrs]

    def state_dict(self) -> dict:
        sd = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "planner")}
        sd["planner"] = None if self.planner is None else self.planner.state()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        planner = state_dict.pop("planner", None)
        self.__dict__.update(state_dict)
        if planner is not None and self.planner is not None:
            self.planner.load(planner)


__all__ = ["MinimalDissipation", "MinimalDissipationLR", "plan", "per_chain_grads", "rate_factors"]
