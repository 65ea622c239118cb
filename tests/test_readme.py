"""The README's code runs as written, and CI runs the README's test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands():
    first = re.match(r"```bash\n(.*?)```", README, re.S)
    assert first, "README must start with the two fresh-machine commands"
    lines = [l for l in first.group(1).splitlines() if l.strip()]
    assert len(lines) == 2
    assert "mindiss" in lines[0] and "pytest" in lines[1]
    assert "torch==2.13.0" in lines[0] and "torch==2.13.0" in lines[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert lines[1] in ci, ".ci/run must run exactly the README's test command"


def test_readme_python_block_runs(capsys):
    block = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    # Same code, smaller sizes: the statements and the printed identities are what is tested.
    block = block.replace("n_chains=100_000", "n_chains=20_000").replace("n_steps=1000", "n_steps=200")
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "bound W* = 8.3333 kT" in out
    w_ex, identity = re.search(r"moments backend: W_ex = ([\d.]+), KL_T \+ entropy production = ([\d.]+)", out).groups()
    assert w_ex == identity


def test_readme_general_potentials_block_runs(capsys):
    block = re.findall(r"```python\n(.*?)```", README, re.S)[1]
    exec(compile(block, "README.md", "exec"), {"md": __import__("mindiss")})
    out = capsys.readouterr().out.splitlines()
    assert "fisher-full" in out[0] and "Fokker-Planck" in out[0]
    assert "+-" in out[1]
