"""K-FAC: a layer-wise Kronecker-factored estimate of the centred model Fisher of a network EBM.

The Fisher of an EBM is a covariance over model samples (the persistent chains),
I = Cov_p[d_theta E]. For a ``NeuralEnergy`` whose parameters all sit in ``torch.nn.Linear``
layers, layer l maps a_l (its input) to s_l = W_l a_l + b_l, and one chain's gradient in that
layer is the outer product

    d E / d[W_l | b_l] = g_l abar_l^T,   abar_l = (a_l, 1),   g_l = d E / d s_l

(E acts row by row, so g_l of chain i is the gradient of sum_j E(x_j) in s_l's row i: one backward).

**Uncentred second moment, Kronecker-factored** (Martens & Grosse 2015): with vec the row-major
flattening of (out, in + 1) matrices,

    M_l = E[vec(g abar^T) vec(g abar^T)^T] = E[(g g^T) (x) (abar abar^T)] ~ G_l (x) A_l,
    A_l = E[abar abar^T],  G_l = E[g g^T]                       (expectations over chains).

It is exact when g is the same for every chain (the last layer of a scalar-output network:
g = 1) or for a single chain.

**Centring.** I_ll = M_ll - m_l m_l^T with m_l = E[g abar^T] the layer's mean gradient. The
Kronecker factorisation is exactly the assumption that g and abar are independent across chains;
under that same assumption the mean is m_l = gbar abar_mean^T (gbar = E[g], abar_mean = E[abar]), so
the centred block is

    I_l ~ G_l (x) A_l - (gbar gbar^T) (x) (abar_mean abar_mean^T)
        = Cov(g) (x) Cov(abar) + Cov(g) (x) abar_mean abar_mean^T + gbar gbar^T (x) Cov(abar)  >= 0:

positive semi-definite by construction (each term is), where subtracting the true m_l m_l^T from
G (x) A is not (on small SiLU MLPs the hidden layers gave m^T (G (x) A)^-1 m = 3 to 7 > 1: an
indefinite "Fisher"). The rank-1 term is removed through Sherman-Morrison on the damped Kronecker
part: with K_l = G_l (x) A_l + lambda (eigendecompositions G = U_G diag(g) U_G^T,
A = U_A diag(a) U_A^T, so K_l^-1 V = U_G [(U_G^T V U_A) / (g a^T + lambda)] U_A^T: exact Tikhonov
damping), v_l = vec(gbar abar_mean^T), u_l = K_l^-1 v_l, q_l = <v_l, u_l>:

    (K_l - v_l v_l^T)^-1 x = K_l^-1 x + u_l <u_l, x> / (1 - q_l),

and q_l = (gbar^T G^-1 gbar)(abar_mean^T A^-1 abar_mean) < 1 undamped (each factor is s / (1 + s)
for G = Cov(g) + gbar gbar^T), smaller with damping. Where g is the same for every chain (the last
layer of a scalar-output network: g = 1) this is the exact centred block; so it is for one chain
(both sides 0). Moving averages of G, A, gbar and abar_mean keep it positive semi-definite
(E_t[G_t] >= E_t[gbar_t gbar_t^T] >= E_t[gbar_t] E_t[gbar_t]^T).

**Maintained libraries** (checked 2026-12-02; benchmarks/README.md). They are built for a loss that
is a sum of per-sample losses with a likelihood, and return uncentred second moments. Taking
E(x_i) of the chains as the per-sample "loss": BackPACK 1.7.1's first-order extensions work on
loss = sum_i f(x_i) with any activation (``BatchGrad`` = the per-chain gradients, exact to 1e-16;
``Variance`` = the centred diagonal diag Cov_p[d_theta E] with 1/N, exact to 6e-17 in float64);
its second-order ``KFLR`` with ``MSELoss(reduction="sum")`` against any fixed target (the loss's
Hessian is the constant 2) gives exactly our uncentred factors (G = KFLR / 2N, A equal; weight and
bias as separate blocks) but not the means, so not the centred estimate, and it refuses SiLU
("no extension for SiLU"; tanh works). curvlinops 3.0.1 (its source read, not run: it needs
BackPACK and five more packages): ``EFLinearOperator`` is the uncentred gradient covariance and
``KFACLinearOperator``'s factors are uncentred covariances (its docstrings), for MSELoss,
CrossEntropyLoss or BCEWithLogitsLoss; the same MSE trick gives the uncentred K-FAC, the centring is
left to the user. nngeometry 0.4 was not tried.

Blocks of different layers are treated as independent (block-diagonal estimate), as in K-FAC.
Cost per refresh: one forward and backward over the chains (no per-chain gradients, no N x P
array) plus O(in^3 + out^3) per layer; per ``apply``: two small matrix products per layer.
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError, require_positive_int
from .preconditioners import Preconditioner

F64 = torch.float64


def _neural(energy):
    """The NeuralEnergy inside ``energy`` (unwrapping e.g. ``GridQuadrature.inner``), else InputError."""
    from ..energies.neural import NeuralEnergy

    e = energy
    for _ in range(4):
        if isinstance(e, NeuralEnergy):
            return e
        e = getattr(e, "inner", None)
    raise InputError(f"K-FAC needs a NeuralEnergy (an MLP of torch.nn.Linear layers), got {type(energy).__name__}")


def linear_layers(energy) -> list[dict]:
    """Per ``torch.nn.Linear`` layer of a NeuralEnergy: its module, its weight's and bias's offsets in
    theta, and its (out, in) sizes. InputError if a parameter lies outside every Linear layer."""
    net = _neural(energy)
    offsets, col = {}, 0
    for n, size in zip(net._names, net._sizes):
        offsets[n] = (col, size)
        col += size
    layers, covered = [], set()
    for mname, mod in net.module.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        wname, bname = f"{mname}.weight", f"{mname}.bias"
        if wname not in offsets:
            continue
        layers.append({"name": mname, "module": mod, "out": mod.out_features, "in": mod.in_features,
                       "w": offsets[wname][0], "b": offsets[bname][0] if bname in offsets else None})
        covered |= {wname, bname}
    rest = [n for n in net._names if n not in covered]
    if rest or not layers:
        raise InputError(f"K-FAC needs every parameter in a torch.nn.Linear layer; {net.label} has "
                         f"{', '.join(rest) or 'no Linear layer'} outside them")
    return layers


def _gather(layer: dict, v: torch.Tensor) -> torch.Tensor:
    """The (out, in + 1) matrix [W | b] of layer ``layer`` in the flat vector v (P,) ((out, in) without a bias)."""
    o, i, w = layer["out"], layer["in"], layer["w"]
    W = v[w:w + o * i].reshape(o, i)
    if layer["b"] is None:
        return W
    return torch.cat([W, v[layer["b"]:layer["b"] + o].unsqueeze(1)], 1)


def _scatter(layer: dict, M: torch.Tensor, out: torch.Tensor) -> None:
    o, i, w = layer["out"], layer["in"], layer["w"]
    out[w:w + o * i] = M[:, :i].reshape(-1)
    if layer["b"] is not None:
        out[layer["b"]:layer["b"] + o] = M[:, i]


def layer_inputs_and_grads(energy, x: torch.Tensor, theta: torch.Tensor, layers: list[dict] | None = None):
    """Per Linear layer of a NeuralEnergy, over the rows x (n, d) at theta: (abar, g), abar = (a, 1)
    the layer's inputs with the bias column (n, in + 1) and g = d E / d s its output gradients (n, out),
    float64. One forward (hooks record each layer's input and output) and one backward of sum_i f(x_i)
    (E acts row by row, so row i of the gradient is chain i's own)."""
    net = _neural(energy)
    layers = linear_layers(energy) if layers is None else layers
    cdt = net.dtype or x.dtype
    seen: dict = {}
    hooks = [L["module"].register_forward_hook(lambda mod, inp, out, key=L["name"]: seen.__setitem__(key, (inp[0], out)))
             for L in layers]
    try:
        with torch.enable_grad():
            flat = theta.detach().to(cdt).requires_grad_(True)   # the layer outputs need a graph
            params = {**net._unflatten(flat), **net._buffers_for(cdt, theta.device)}
            f = net._f(params, x.detach().to(cdt))
            outs = [seen[L["name"]][1] for L in layers]
            gs = torch.autograd.grad(f.sum(), outs)
    finally:
        for h in hooks:
            h.remove()
    n = x.shape[0]
    res = []
    for L, g in zip(layers, gs):
        a = seen[L["name"]][0].detach().to(F64).reshape(n, -1)
        abar = a if L["b"] is None else torch.cat([a, torch.ones(n, 1, dtype=F64, device=a.device)], 1)
        res.append((abar, g.detach().to(F64).reshape(n, -1)))
    return res


def kfac_factors(energy, x: torch.Tensor, theta: torch.Tensor, layers: list[dict] | None = None) -> list[dict]:
    """Per Linear layer of a NeuralEnergy, over the rows x (n, d) at theta (float64 results):
    A = (1/n) sum_i abar_i abar_i^T ((in+1)^2), G = (1/n) sum_i g_i g_i^T (out^2),
    m = (1/n) sum_i g_i abar_i^T (out, in+1): the layer's mean gradient E[d_theta E], and the means
    gbar = (1/n) sum_i g_i, abar = (1/n) sum_i abar_i (``layer_inputs_and_grads``)."""
    n = x.shape[0]
    return [{"A": abar.T @ abar / n, "G": g.T @ g / n, "m": g.T @ abar / n, "gbar": g.mean(0), "abar": abar.mean(0)}
            for abar, g in layer_inputs_and_grads(energy, x, theta, layers)]


def diagonal_fisher(energy, x: torch.Tensor, theta: torch.Tensor, layers: list[dict] | None = None) -> torch.Tensor:
    """The exact diagonal of the sample Fisher Cov[d_theta E] over the rows x (1/(n - 1), as
    ``preconditioners.fisher_from_samples``), (P,) float64, without per-chain gradients: chain i's
    gradient in a Linear layer is g_i abar_i^T, so per entry (o, j)

        sum_i (g_io abar_ij)^2 = ((g * g)^T (abar * abar))_oj,   sum_i g_io abar_ij = (g^T abar)_oj,

    two (out x n) (n x in+1) products per layer after one forward and backward: O(n P) time and
    O(n (in + out)) memory, against O(n P) memory for the (n, P) per-chain gradients."""
    layers = linear_layers(energy) if layers is None else layers
    n = x.shape[0]
    out = torch.empty(_neural(energy).n_params, dtype=F64, device=x.device)
    for L, (abar, g) in zip(layers, layer_inputs_and_grads(energy, x, theta, layers)):
        s1, s2 = g.T @ abar, (g * g).T @ (abar * abar)
        _scatter(L, (s2 - s1 * s1 / n) / max(n - 1, 1), out)
    return out


def per_sample_layer_grads(energy, x, theta, layers=None) -> list[torch.Tensor]:
    """Per chain and layer the gradient g_i abar_i^T flattened row-major, (n, out (in + 1)): the
    quantities whose outer products K-FAC factorises (for tests and exact block references)."""
    net = _neural(energy)
    layers = linear_layers(energy) if layers is None else layers
    g = net.grad_theta(x, theta)
    return [g[:, _flat_index(L)] for L in layers]


class KFACFisher(Preconditioner):
    """P = (I_kfac + lambda)^-1 with I_kfac the centred K-FAC estimate of the Fisher (module docstring):
    per Linear layer G (x) A - (gbar gbar^T) (x) (abar abar^T), block-diagonal over layers, inverted
    exactly through the factors' eigendecompositions and Sherman-Morrison.

    ``refresh``: updates between factor estimates (each one forward and backward over ``rows``
    chains (None: all) plus the eigendecompositions; between refreshes the last inverse is reused).
    ``ema``: moving average of A, G, gbar and abar across refreshes (bias-corrected as in Adam).
    ``damping``: a number or "auto" = ``relative_damping`` x the mean diagonal of the centred
    estimate, sum_l (tr G_l tr A_l - |gbar_l|^2 |abar_l|^2) / P. ``min_residual``: a floor of
    1 - q_l against round-off (q_l < 1 in exact arithmetic); a layer where it acts is counted in
    ``report()["shrunk_mean_terms"]``.
    Needs a NeuralEnergy whose parameters all sit in Linear layers, on particle chains
    (``needs = "none"``: it reads the chains itself, the update loop hands it only the chain mean).
    """

    name = "fisher-kfac"
    needs = "none"
    rebuilt = ("energy", "layers")

    def __init__(self, *, refresh: int = 1, ema: float = 0.9, damping="auto", relative_damping: float = 1e-3,
                 rows: int | None = None, min_residual: float = 1e-9):
        if damping != "auto" and not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
            raise InputError(f"damping must be 'auto' or a number >= 0, got {damping!r}")
        if not 0.0 <= ema < 1.0:
            raise InputError(f"ema must lie in [0, 1), got {ema!r}")
        if not 0.0 < min_residual <= 1.0:
            raise InputError(f"min_residual must lie in (0, 1], got {min_residual!r}")
        self.refresh = require_positive_int("refresh", refresh)
        self.ema, self.damping_spec, self.relative_damping = float(ema), damping, float(relative_damping)
        self.kfac_rows = None if rows is None else require_positive_int("rows", rows)
        self.min_residual = float(min_residual)
        self.energy = self.layers = None
        self.updates = self.n_refresh = 0
        self._acc = None          # per layer [A, G, gbar, abar] moving averages (un-corrected)
        self._inv = None          # per layer (U_A, a, U_G, g, u, c, q, denominators, v)
        self.damping = 0.0
        self.shrunk = 0           # layers whose mean term was shrunk (c < 1) at the last refresh

    def __repr__(self):   # settings only: part of a run's fingerprint (checkpoints)
        return (f"KFACFisher(refresh={self.refresh}, ema={self.ema}, damping={self.damping_spec!r}, "
                f"relative_damping={self.relative_damping}, rows={self.kfac_rows}, min_residual={self.min_residual})")

    def start(self, ctx) -> None:
        self.energy = ctx.energy
        self.layers = linear_layers(ctx.energy)
        if not getattr(ctx.state, "particles", False):
            raise InputError("the K-FAC Fisher needs simulated chains (backend 'particles')")

    def observe(self, stats, ctx) -> None:
        if self.layers is None:     # after a resume: rebuilt from the energy
            self.start(ctx)
        self.updates += 1
        if self._inv is not None and (self.updates - 1) % self.refresh:
            return
        x = ctx.state.x
        if self.kfac_rows is not None and self.kfac_rows < x.shape[0]:
            idx = torch.randint(x.shape[0], (self.kfac_rows,), generator=ctx.gen, device=ctx.gen.device)
            x = x[idx.to(x.device)]
        new = kfac_factors(self.energy, x, ctx.theta, self.layers)
        beta = self.ema
        self.n_refresh += 1
        if self._acc is None or beta == 0:
            self._acc = [[(1 - beta) * f[k] for k in self.KEYS] for f in new]
        else:
            self._acc = [[beta * a + (1 - beta) * f[k] for a, k in zip(acc, self.KEYS)]
                         for acc, f in zip(self._acc, new)]
        corr = 1.0 - beta ** self.n_refresh if beta else 1.0
        self._factorise([[t / corr for t in acc] for acc in self._acc])

    #: the per-layer statistics averaged across refreshes
    KEYS = ("A", "G", "gbar", "abar")

    def _factorise(self, factors) -> None:
        """Eigendecompositions, damping and the Sherman-Morrison terms from per-layer [A, G, gbar, abar]."""
        P = sum(L["out"] * (L["in"] + (L["b"] is not None)) for L in self.layers)
        if self.damping_spec == "auto":   # the mean diagonal of G (x) A - (gbar gbar^T) (x) (abar abar^T)
            diag = sum(float(torch.trace(G) * torch.trace(A)) - float((gb @ gb) * (ab @ ab)) for A, G, gb, ab in factors)
            self.damping = self.relative_damping * max(diag / P, 1e-300)
        else:
            self.damping = float(self.damping_spec)
        lam = self.damping
        self._inv, self.shrunk = [], 0
        for A, G, gb, ab in factors:
            m = torch.outer(gb, ab)
            a, UA = torch.linalg.eigh(A)
            g, UG = torch.linalg.eigh(G)
            a, g = a.clamp_min(0.0), g.clamp_min(0.0)
            denom = g[:, None] * a[None, :] + lam
            if lam <= 0:   # undamped: the pseudo-inverse on the Kronecker part's support
                denom = torch.where(denom > 1e-12 * float(denom.max()), denom, torch.full_like(denom, math.inf))
            u = UG @ ((UG.T @ m @ UA) / denom) @ UA.T
            q = float((u * m).sum())
            c = 1.0 if q <= 1.0 - self.min_residual else (1.0 - self.min_residual) / q
            self.shrunk += c < 1.0
            self._inv.append((UA, a, UG, g, u, c, q, denom, m))

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(g)
        for L, (UA, a, UG, gg, u, c, q, denom, m) in zip(self.layers, self._inv):
            V = _gather(L, g).to(F64)
            y = UG @ ((UG.T @ V @ UA) / denom) @ UA.T
            y = y + (c * float((u * V).sum()) / (1.0 - c * q)) * u
            _scatter(L, y.to(g.dtype), out)
        return out

    def matrix(self) -> torch.Tensor:
        """The damped estimate as a dense P x P matrix in theta's order (small networks; tests)."""
        P = _neural(self.energy).n_params
        out = torch.zeros(P, P, dtype=F64)
        for L, (UA, a, UG, g, u, c, q, denom, m) in zip(self.layers, self._inv):
            A = UA @ torch.diag(a) @ UA.T
            G = UG @ torch.diag(g) @ UG.T
            block = torch.kron(G, A) - c * torch.outer(m.reshape(-1), m.reshape(-1))
            idx = _flat_index(L)
            out[idx[:, None], idx[None, :]] = block
        return out + self.damping * torch.eye(P, dtype=F64)

    def report(self) -> dict:
        return {"name": self.name, "damping": self.damping, "ema": self.ema, "refresh": self.refresh,
                "layers": len(self.layers or ()), "refreshes": self.n_refresh, "shrunk_mean_terms": self.shrunk,
                "q": [round(t[6], 6) for t in (self._inv or ())]}


def _flat_index(L: dict) -> torch.Tensor:
    """theta's index of each entry of the row-major (out, in + 1) layer matrix [W | b] ((out, in) without bias)."""
    o, i = L["out"], L["in"]
    idx = L["w"] + torch.arange(o * i).reshape(o, i)
    if L["b"] is not None:
        idx = torch.cat([idx, (L["b"] + torch.arange(o)).unsqueeze(1)], 1)
    return idx.reshape(-1)
