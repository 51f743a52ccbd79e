"""The project's own plumbing: environment.yml, profiles, results tables and provenance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

from moero.book.profiles import PROFILES, get_profile, notebook_params
from moero.book.run import start_run
from moero.eval.tables import Table

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_package_with_its_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.split("=")[0] == "python" for d in conda)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    extras = set(pyproject()["project"]["optional-dependencies"])
    assert {"book", "test", "raw"} <= extras
    # the same pins as make setup: the constraints file, torch at its pinned version, the package with extras
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split() if "==" in line)
    assert "-c constraints.txt" in pip and f"torch=={pins['torch']}" in pip
    assert "-e .[book,test,raw]" in pip and any(d.startswith("jupyterlab==") for d in pip)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_constraints_pin_torch_and_every_declared_dependency():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    assert pins["torch"] == "2.13.0"
    proj = pyproject()["project"]
    declared = list(proj["dependencies"])
    for deps in proj["optional-dependencies"].values():
        declared += deps
    for dep in declared:
        name = dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in constraints.txt"


def test_unknown_profile_and_parameters_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_profile("huge")
    with pytest.raises(ValueError, match="no entry for notebook 'nope'"):
        notebook_params("nope", "cpu")
    name = next(n for n, p in PROFILES["cpu"].notebooks.items() if p)
    with pytest.raises(ValueError, match="'not_a_param'"):
        notebook_params(name, "cpu", {"not_a_param": 1})


def test_every_profile_lists_the_same_notebooks():
    names = {name: set(p.notebooks) for name, p in PROFILES.items()}
    assert len({frozenset(v) for v in names.values()}) == 1, names
    for prof in PROFILES.values():
        for nb, params in prof.notebooks.items():
            assert set(params) == set(PROFILES["cpu"].notebooks[nb]), (prof.name, nb)


def test_override_changes_only_that_parameter():
    name, params = next((n, p) for n, p in PROFILES["smoke"].notebooks.items() if p)
    key = next(iter(params))
    out = notebook_params(name, "smoke", {key: "changed"})
    assert out[key] == "changed"
    assert PROFILES["smoke"].notebooks[name][key] != "changed"


def test_table_csv_and_markdown_round_trip():
    rows = [{"method": "a|b", "ssim": 0.5}, {"method": "c", "ssim": 0.25, "extra": 1}]
    tab = Table(rows, caption="t")
    assert tab.columns == ["method", "ssim", "extra"]
    lines = tab.to_csv().splitlines()
    assert lines[0] == "method,ssim,extra" and lines[2] == "c,0.25,1"
    md = tab.to_markdown().splitlines()
    assert md[0] == "| method | ssim | extra |" and "a\\|b" in md[2]
    assert ">0.2500</td>" in tab._repr_html_()  # SSIM at 4 decimals


def test_run_writes_files_and_complete_provenance(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = start_run("00_profiles", profile="smoke", results_dir=tmp_path, seed=3)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["complete"] is False
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    run.figure(fig, "line", caption="a line")
    plt.close(fig)
    run.table([{"a": 1}], "tab")
    prov = run.finish()
    on_disk = json.loads((tmp_path / "provenance.json").read_text())
    assert on_disk == prov
    assert prov["complete"] is True and prov["profile"] == "smoke" and prov["seed"] == 3
    assert prov["commit"] != "" and prov["environment"]["torch"]
    assert set(prov["files"]) == {"line.png", "tab.csv", "tab.md"}
    for name in prov["files"]:
        assert (tmp_path / name).stat().st_size > 0


def test_public_api_resolves_and_layers_hold():
    """Every name the package and its layers export exists; the layer order has no upward import, no
    circle and no private name taken across modules (the project's check-imports, when available)."""
    import importlib
    import subprocess
    import sys
    from pathlib import Path

    import moero

    for name in moero.__all__:
        assert getattr(moero, name) is not None, name
    for layer in ("physics", "data", "augment", "models", "eval", "train"):
        mod = importlib.import_module(f"moero.{layer}")
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, f"moero.{layer} exports missing names {missing}"
    tool = Path(__file__).resolve().parents[2] / "shared" / "tools" / "check-imports"
    if not tool.is_file():
        pytest.skip(f"{tool} not present (the project's shared tools sit beside the checkout)")
    res = subprocess.run([sys.executable, str(tool), str(Path(moero.__file__).parent)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
