"""Minimal-dissipation learning rates for your own PyTorch loop.

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

from .errors import InputError, require_positive, require_positive_int
from .preconditioners import conjugate_gradient, fisher_from_samples, lowrank_fisher_matvec
from .schedules import DiscreteSchedule, Schedule, alpha, optimal_harmonic

FISHER_KINDS = (None, "full", "diag", "lowrank")
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


# ---------------------------------------------------------------------------- the optimizer

class MinimalDissipation(torch.optim.Optimizer):
    """theta_{k+1} = theta_k - lr alpha_k P_k g_hat: the minimal-dissipation learning rate, kT = 1.

    ``params``: tensors or param groups, as for any torch optimizer. The plan (see ``plan``):
    ``duration`` T and ``n_steps`` n with ``tau`` (the chains' relaxation time, your estimate) or
    ``variance``/``mobility`` (harmonic trap: the exact optimum) or ``schedule``. It has
    ``n_updates = n + 2`` updates: an impulse, n interior updates each to be followed by a chain
    move of time ``last_move_time = T / n``, and a final impulse (``last_move_time = 0`` after an
    impulse). A step beyond the plan raises ``InputError``.

    ``lr`` (per group): the factor multiplying alpha_k. Without a Fisher it stands for I^-1 (the
    inverse curvature of the energy in theta; s for the harmonic trap); with ``fisher`` it is 1 in
    theory. ``fisher`` (per group): None (P = identity), "full" (P = (I + lambda)^-1, a P x P
    solve), "diag" (elementwise) or "lowrank" (conjugate gradient on the centred n x P gradients,
    the P x P matrix never formed); I = Cov_chains[d_theta E] from per-chain gradients given by
    ``step(per_chain_grads=G)``, ``set_fisher_samples(G)``, or computed from ``energy`` (an
    ``nn.Module`` or callable x -> (N,), see ``per_chain_grads``) by ``step(chains=x)``. The
    estimate is kept until new samples arrive. ``damping``: lambda, a number or "auto"
    (``relative_damping`` times the mean diagonal of I). ``fisher_rows``: chains subsampled (with
    ``gen``) when the optimizer computes G itself.

    ``state_dict()`` holds the step count, the plan and the Fisher estimate (float64): a resumed
    optimizer continues bit-identically.
    """

    def __init__(self, params, duration=None, n_steps=None, *, tau=None, variance=None, mobility=1.0,
                 schedule=None, lr: float = 1.0, fisher=None, damping="auto", relative_damping: float = 1e-3,
                 energy=None, fisher_rows: int | None = None, gen: torch.Generator | None = None,
                 cg_tol: float = 1e-8, cg_max_iter: int = 500):
        d = plan(duration, n_steps, tau=tau, variance=variance, mobility=mobility, schedule=schedule)
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
        self.plan = d
        self.energy, self.fisher_rows, self.gen = energy, fisher_rows, gen
        self.relative_damping = float(relative_damping)
        self.cg_tol, self.cg_max_iter = cg_tol, cg_max_iter
        self.last_move_time = 0.0
        defaults = {"lr": float(lr), "fisher": fisher, "damping": damping, "step": 0, **_plan_groups_keys(d)}
        super().__init__(params, defaults)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.updates_done} of {self.n_updates} planned updates done)"]
        for i, g in enumerate(self.param_groups):
            lines.append(f"  group {i}: lr={g['lr']}, fisher={g['fisher']}, damping={g['damping']}, "
                         f"{len(g['params'])} tensors")
        return "\n".join(lines)

    # -- plan bookkeeping ------------------------------------------------------------------
    @property
    def n_updates(self) -> int:
        """n + 2: the planned number of ``step()`` calls (impulses included)."""
        return len(self.param_groups[0]["rates"])

    @property
    def updates_done(self) -> int:
        return int(self.param_groups[0]["step"])

    @property
    def next_move_time(self) -> float:
        """Chain time to simulate after the next update (0 for an impulse)."""
        k = self.updates_done
        return self.param_groups[0]["move_times"][k] if k < self.n_updates else 0.0

    def add_param_group(self, param_group: dict) -> None:
        if self.param_groups:
            param_group.setdefault("step", self.updates_done)
            for key in ("rates", "move_times"):
                param_group.setdefault(key, self.param_groups[0][key])
        _check_group_options(param_group.get("lr", self.defaults["lr"]),
                             param_group.get("fisher", self.defaults["fisher"]),
                             param_group.get("damping", self.defaults["damping"]))
        super().add_param_group(param_group)

    # -- Fisher --------------------------------------------------------------------------------
    def _columns(self):
        """(group, start, stop) column ranges of each group in the flattened parameter order."""
        col = 0
        for group in self.param_groups:
            size = sum(p.numel() for p in group["params"])
            yield group, col, col + size
            col += size

    def set_fisher_samples(self, per_chain_grads) -> None:
        """I = Cov_chains[d_theta E] per group from G (n, P): a tensor with columns in the flattened order
        of all parameters (groups in order), or a sequence of per-parameter tensors (n, *p.shape)."""
        G = self._as_matrix(per_chain_grads)
        if G.shape[0] < 2:
            raise InputError(f"the Fisher needs per-chain gradients of at least 2 chains, got {G.shape[0]}")
        for group, a, b in self._columns():
            kind = group["fisher"]
            if kind is None:
                continue
            g = G[:, a:b]
            first = group["params"][0]
            if kind == "lowrank":
                c = g - g.mean(0)
                scale = float((c * c).sum()) / (c.shape[0] * c.shape[1])
                est = c
            elif kind == "diag":   # Var_chains[d_theta_j E], without the P x P matrix
                c = g - g.mean(0)
                est = (c * c).sum(0) / max(g.shape[0] - 1, 1)
                scale = float(est.mean())
            else:
                est = fisher_from_samples(g)
                scale = float(torch.diagonal(est).mean())
            lam = (self.relative_damping * max(scale, 1e-300) if group["damping"] == "auto"
                   else float(group["damping"]))
            self.state[first]["fisher"] = est.to(device=first.device)
            self.state[first]["fisher_damping"] = torch.tensor(lam, dtype=F64)

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
        kind = group["fisher"]
        st = self.state[group["params"][0]]
        if "fisher" not in st:
            raise InputError(f"fisher={kind!r} needs per-chain gradients before the first step: pass "
                             "step(per_chain_grads=G), call set_fisher_samples(G), or give energy= and call "
                             "step(chains=x)")
        est, lam = st["fisher"].to(g.device), float(st["fisher_damping"])
        if kind == "diag":
            return g / (est + lam)
        if kind == "full":
            eye = torch.eye(est.shape[0], dtype=F64, device=g.device)
            return torch.linalg.solve(est + lam * eye, g)
        x, _, _ = conjugate_gradient(lowrank_fisher_matvec([(1.0, est)], lam), g, tol=self.cg_tol,
                                     max_iter=self.cg_max_iter)
        return x

    # -- the update ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None, *, per_chain_grads=None, chains=None):
        """One planned update: p -= lr alpha_k P_k p.grad for every parameter (p.grad = g_hat).

        ``per_chain_grads`` (n, P) or ``chains`` (with ``energy=``) refresh the Fisher first.
        Sets ``last_move_time``: the chain time to simulate before the next update (0 after an
        impulse). Returns the closure's loss, as torch optimizers do."""
        k = self.updates_done
        if k >= self.n_updates:
            raise InputError(f"MinimalDissipation planned {self.n_updates} updates (impulse, {self.n_updates - 2} "
                             f"interior, impulse) and all were taken: step() called for update {k + 1}. Build a "
                             "new optimizer (or plan more n_steps) to continue training")
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
        for group in self.param_groups:
            lr = group["lr"] * group["rates"][k]
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
        self.last_move_time = float(self.param_groups[0]["move_times"][k])
        return loss

    # -- exact resume ------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, but the Fisher estimate keeps float64 (torch casts state to the parameter dtype)."""
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for idx, saved in state_dict["state"].items():
            p = params[idx] if isinstance(idx, int) else None
            if p is None:
                continue
            for key in ("fisher", "fisher_damping"):
                if key in saved:
                    self.state[p][key] = saved[key].detach().clone().to(
                        device=p.device if key == "fisher" else "cpu", dtype=F64)
        self.last_move_time = (float(self.param_groups[0]["move_times"][self.updates_done - 1])
                               if self.updates_done else 0.0)




def _check_group_options(lr, fisher, damping) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr >= 0 and math.isfinite(lr)):
        raise InputError(f"lr must be a finite number >= 0, got {lr!r}")
    if fisher not in FISHER_KINDS:
        raise InputError(f"fisher must be one of {FISHER_KINDS}, got {fisher!r}")
    if damping != "auto" and not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
        raise InputError(f"damping must be 'auto' or a number >= 0, got {damping!r}")


# ---------------------------------------------------------------------------- the scheduler

class MinimalDissipationLR(LRScheduler):
    """lr_k = base_lr alpha_k for an optimizer you keep (SGD: base_lr stands for I^-1).

    The plan is ``plan(duration, n_steps, tau=... | variance=... | schedule=...)``: n + 2 updates.
    Call ``scheduler.step()`` after every ``optimizer.step()``, as for any torch scheduler: the
    lr before update k is base_lr * alpha_k; after the last planned update it is 0 and a further
    ``scheduler.step()`` raises ``InputError``. ``move_time(k)``: the chain time after update k.
    With ``variance=`` (harmonic trap) and ``SGD(lr=1)`` the rates are ``mindiss.train``'s.
    """

    def __init__(self, optimizer, duration=None, n_steps=None, *, tau=None, variance=None, mobility=1.0,
                 schedule=None, last_epoch: int = -1):
        d = plan(duration, n_steps, tau=tau, variance=variance, mobility=mobility, schedule=schedule)
        self.rates = [float(v) for v in d.lr]
        self.move_times = [float(v) for v in d.dt]
        super().__init__(optimizer, last_epoch)

    @property
    def n_updates(self) -> int:
        return len(self.rates)

    def move_time(self, k: int) -> float:
        return self.move_times[k]

    def get_lr(self):
        k = self.last_epoch
        if k > self.n_updates:
            raise InputError(f"MinimalDissipationLR planned {self.n_updates} updates; scheduler.step() was called "
                             f"{k} times (one more than the plan allows after its last update)")
        if k == self.n_updates:
            return [0.0 for _ in self.base_lrs]
        return [base * self.rates[k] for base in self.base_lrs]


__all__ = ["MinimalDissipation", "MinimalDissipationLR", "plan", "per_chain_grads"]
