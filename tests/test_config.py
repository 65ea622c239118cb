"""The config schema (pydantic models): every problem at once with its key path, kind-specific keys,
the tomli-w writer's round trip, the report cap, and the machine limits checked before any work."""
import re
import tomllib

import pytest

from mindiss.app import config as C
from mindiss.errors import InputError

GB = 10**9


def problems(raw, **kw) -> list[str]:
    """The problem lines of the InputError that ``resolve(raw)`` raises."""
    with pytest.raises(InputError) as info:
        C.resolve(raw, available_memory=kw.get("available_memory", 64 * GB))
    text = str(info.value)
    assert text.startswith("invalid config:\n  - ")
    return text.split("\n  - ")[1:]


def test_defaults_are_the_documented_values():
    """The defaults design.md and the old schema stated (a sanity check of the models' defaults)."""
    cfg = C.defaults()
    assert cfg["energy"] == {"kind": "harmonic", "dim": 1, "variance": 1.0, "theta0": [0.0]}
    assert cfg["data"] == {"kind": "gaussian", "mean": [5.0], "variance": [1.0], "term": "moments"}
    assert cfg["schedule"] == {"kind": "optimal"}
    assert cfg["dynamics"]["sampler"] == "exact" and cfg["dynamics"]["n_chains"] == 100_000
    assert cfg["output"]["grid_n"] is None and cfg["output"]["checkpoint_every"] == 100


def test_every_problem_named_at_once():
    lines = problems({"energy": {"variance": -1.0, "foo": 1}, "dynamics": {"n_steps": 0, "n_chains": "many",
                                                                            "sampler": "heun"},
                      "output": {"record_every": 1.5}, "extra": {}})
    text = "\n".join(lines)
    for key in ("energy.variance", "energy.foo", "dynamics.n_steps", "dynamics.n_chains", "dynamics.sampler",
                "output.record_every", "[extra]"):
        assert key in text, key
    assert len(lines) == 7
    assert all(re.search(r"(\w+\.\w+|\[\w+\])", line) for line in lines)


@pytest.mark.parametrize("raw,needle", [
    ({"energy": {"kind": "harmonic", "mean0": 1.0}}, "energy.mean0 applies to energy.kind = 'gaussian', not 'harmonic'"),
    ({"schedule": {"kind": "optimal", "scale": 2.0}}, "schedule.scale applies to schedule.kind"),
    ({"schedule": {"kind": "constant", "decay": 2.0}}, "schedule.decay applies to schedule.kind = 'exponential'"),
    ({"data": {"kind": "file"}}, "data.path is required"),
    ({"data": {"kind": "file", "path": ""}}, "data.path must name a .npy or .csv file"),
    ({"energy": {"kind": "helmholtz"}}, "energy.kind must be one of harmonic"),
    ({"energy": {"kind": 3, "variance": 1.0}}, "energy.kind must be one of"),
    ({"dynamics": {"n_step": 10}}, "did you mean dynamics.n_steps?"),
    ({"dynamics": {"seed": 2**63}}, "dynamics.seed must be a non-negative integer"),
    ({"dynamics": {"mobility": float("nan")}}, "dynamics.mobility must be a positive number"),
    ({"dynamics": {"mobility": True}}, "dynamics.mobility must be a positive number"),
    ({"schedule": {"kind": "friction", "tau": -1.0}}, "schedule.tau must be 'auto', 'online' or a positive number"),
    ({"energy": {"kind": "rbm", "hidden": [8, 8]}, "data": {"kind": "moons"}}, "energy.hidden must be one positive"),
    ({"energy": "harmonic"}, "[energy] must be a table"),
])
def test_named_problem(raw, needle):
    assert needle in "\n".join(problems(raw))


def test_tau_as_a_number_reads_like_its_text():
    """tau = 0.5 (a TOML number) resolves to the same config as tau = "0.5" (the old schema's string)."""
    a = C.resolve({"energy": {"kind": "gaussian"}, "schedule": {"kind": "friction", "tau": 0.5}})
    b = C.resolve({"energy": {"kind": "gaussian"}, "schedule": {"kind": "friction", "tau": "0.5"}})
    assert a == b and a["schedule"]["tau"] == "0.5"


def test_a_refused_kind_does_not_invent_problems_with_its_keys():
    """An unknown energy.kind is one problem; its keys and the rules joining it to other tables are not
    judged against a kind the user did not write."""
    lines = problems({"energy": {"kind": "mpl", "hidden": [8]}, "schedule": {"kind": "constant"}})
    assert len(lines) == 1 and "energy.kind" in lines[0]


def test_report_is_capped():
    raw = {"energy": {f"k{i}": 1 for i in range(500)}}
    lines = problems(raw)
    assert len(lines) == C.MAX_PROBLEMS + 1
    assert lines[-1].startswith(f"... and {500 - C.MAX_PROBLEMS} more problems")


def test_cross_table_defaults():
    cfg = C.resolve({"energy": {"kind": "mlp"}, "data": {"kind": "moons"},
                     "schedule": {"kind": "natural_gradient"}}, available_memory=64 * GB)
    assert cfg["dynamics"]["sampler"] == "mala" and cfg["schedule"]["fisher"] == "diag"
    assert cfg["energy"]["dim"] == 2
    cfg = C.resolve({"energy": {"kind": "gaussian"}, "schedule": {"kind": "natural_gradient"}})
    assert cfg["dynamics"]["sampler"] == "exact" and cfg["schedule"]["fisher"] == "full"


@pytest.mark.parametrize("path", ['plain.npy', 'we"ird.npy', 'back\\slash.npy', 'new\nline.npy', "tab\tand 'quote'.npy",
                                  "unicode \u00e9\u2713.npy"])
@pytest.mark.parametrize("comments", [False, True])
def test_strings_round_trip_through_the_writer(path, comments):
    cfg = C.resolve({"data": {"kind": "file", "path": path}})
    text = C.to_toml(cfg, comments=comments)
    back = tomllib.loads(text)
    assert back["data"]["path"] == path
    assert C.resolve(back) == cfg


def test_print_defaults_lists_every_key_of_every_kind():
    text = C.to_toml(C.defaults(), comments=True)
    for table, keys in C.SCHEMA.items():
        for key in keys:
            assert re.search(rf"^#? ?{key}\b", text, re.M), f"{table}.{key}"


# ------------------------------------------------------------------------ machine limits

def test_grid_limit_is_torchs_category_limit():
    """max_grid_n(2)^2 categories are drawn by torch.multinomial; the next odd n's are refused by torch
    itself (the independent reference for the limit in the config)."""
    import torch

    n = C.max_grid_n(2)
    assert n == 4095
    gen = torch.Generator().manual_seed(0)
    assert torch.multinomial(torch.ones(n * n), 1, generator=gen).shape == (1,)
    with pytest.raises(RuntimeError, match="2\\^24"):
        torch.multinomial(torch.ones((n + 2) ** 2), 1, generator=gen)


def test_grid_n_above_the_limit_refused_before_any_work():
    raw = {"energy": {"kind": "mlp"}, "data": {"kind": "moons"}, "schedule": {"kind": "constant"},
           "output": {"grid_n": 4097}}
    (line,) = problems(raw)
    assert line.startswith("output.grid_n = 4097") and "2^24" in line and "4095" in line
    raw["output"]["grid_n"] = 4095
    assert C.resolve(raw, available_memory=64 * GB)["output"]["grid_n"] == 4095


def test_history_memory_refused_naming_the_key():
    """n_steps = 1e8 keeps (n + 2) history rows of 13 float64 columns (1 parameter, d = 1): > 10 GB."""
    (line,) = problems({"dynamics": {"n_steps": 10**8}}, available_memory=8 * GB)
    assert line.startswith("dynamics.n_steps: this run would need about")
    assert "history" in line and "8 GB is available" in line
    rows_bytes = (10**8 + 2) * 13 * 8                      # rows x (update, t, lr, dt, theta, mean, 7 more)
    need = float(re.search(r"about ([0-9.e+]+) GB", line).group(1)) * GB
    assert need >= rows_bytes


def test_chain_and_network_memory_refused_naming_the_key():
    (line,) = problems({"dynamics": {"n_chains": 10**8}}, available_memory=8 * GB)
    assert line.startswith("dynamics.n_chains:")
    (line,) = problems({"energy": {"kind": "mlp", "hidden": [100_000, 100_000]}, "data": {"kind": "moons"},
                        "schedule": {"kind": "constant"}}, available_memory=8 * GB)
    assert line.startswith("energy.hidden:")


def test_mlp_chain_estimate_matches_the_bench_measurement():
    """The estimate per chain of the 2-64-64-1 MLP against the peak memory per chain measured by
    ``mindiss bench`` (8,865 B/chain float32, benchmarks/README.md), within 25 %."""
    cfg = C.resolve({"energy": {"kind": "mlp"}, "data": {"kind": "moons"}, "schedule": {"kind": "constant"},
                     "dynamics": {"n_chains": 4096}}, available_memory=64 * GB)
    per_chain = C.memory_estimate(cfg)["chains"][0] / 4096
    assert abs(per_chain - 8865) < 0.25 * 8865
