"""The papermill runner: parameters reach the notebook, failures are named and kept, reruns are skipped."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from moero.book import runner as book
from moero.book.runner import NotebookFailed, read_notebook, run_notebook, split_params

HEADER = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
"""

GOOD = HEADER + """
# %% tags=["parameters"]
profile = "cpu"
params = {}
results_dir = None

# %%
from moero.book.run import start_run
run = start_run("00_profiles", profile=profile, params=params, results_dir=results_dir)
print("profile is", profile)

# %%
run.table([{"profile": profile}], "who")
run.finish()
"""

BAD = HEADER + """
# %% tags=["parameters"]
profile = "cpu"

# %%
x = 1

# %%
raise ZeroDivisionError("boom in cell two")
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "notebooks" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.slow
def test_parameters_reach_notebook_provenance_complete_and_rerun_skipped(tmp_path):
    src = write(tmp_path, "good", GOOD)
    results = tmp_path / "results"
    out = tmp_path / "executed"
    res = run_notebook(src, "smoke", out, {"results_dir": str(results)}, progress_bar=False)
    assert not res.skipped and res.executed == out / "good.ipynb"
    nb = nbformat.read(res.executed, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "profile = \"smoke\"" in injected[0].source
    assert any("profile is smoke" in o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    prov = json.loads((results / "provenance.json").read_text())
    assert prov["complete"] and prov["profile"] == "smoke" and prov["notebook"] == "00_profiles"
    for key in ("commit", "parameters", "environment", "wall_time_s", "files", "started"):
        assert key in prov
    assert (results / "who.csv").read_text().splitlines() == ["profile", "smoke"]
    # unchanged source and parameters: skipped; new parameters: executed again
    assert run_notebook(src, "smoke", out, {"results_dir": str(results)}, progress_bar=False).skipped
    other = tmp_path / "results2"
    assert not run_notebook(src, "smoke", out, {"results_dir": str(other)}, progress_bar=False).skipped


@pytest.mark.slow
def test_failing_notebook_names_cell_keeps_partial_and_previous_output(tmp_path):
    out = tmp_path / "executed"
    out.mkdir()
    previous = out / "bad.ipynb"
    previous.write_text("previous good execution")
    src = write(tmp_path, "bad", BAD)
    with pytest.raises(NotebookFailed) as info:
        run_notebook(src, "smoke", out, {}, progress_bar=False)
    err = info.value
    assert err.notebook == "bad" and err.ename == "ZeroDivisionError" and "boom in cell two" in err.evalue
    assert "raise ZeroDivisionError" in str(err) and str(err.partial) in str(err)
    partial = nbformat.read(err.partial, as_version=4)
    failing = [c for c in partial.cells if c.get("execution_count") == err.exec_count]
    assert len(failing) == 1 and failing[0].source.startswith("raise ZeroDivisionError")
    assert failing[0].outputs[0]["ename"] == "ZeroDivisionError"
    assert previous.read_text() == "previous good execution"


def test_split_params_routes_overrides():
    stems = ["01_forward_model", "00_profiles"]
    entries = book.get_profile("smoke").notebooks["01_forward_model"]
    key = next(k for k, v in entries.items() if type(v) is int)  # -p values must have the profile's type
    out = split_params("smoke", stems, {key: 7})
    assert out == {"01_forward_model": {key: 7}, "00_profiles": {}}
    assert split_params("smoke", stems, {f"01_forward_model.{key}": 8})["01_forward_model"] == {key: 8}
    with pytest.raises(ValueError, match="'nonsense'"):
        split_params("smoke", stems, {"nonsense": 1})


def test_reader_serves_matching_execution_and_refuses_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("MOERO_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv("MOERO_PROFILE", "smoke")
    executed = tmp_path / "executed" / "smoke"
    executed.mkdir(parents=True)
    with pytest.raises(RuntimeError, match="no up-to-date execution for profile 'smoke'"):
        read_notebook(GOOD)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1", outputs=[])]
    nb.metadata["moero"] = {"source_sha256": book._sha256(GOOD.encode())}
    nbformat.write(nb, executed / "good.ipynb")
    got = read_notebook(GOOD)
    assert got.metadata["mystnb"]["execution_mode"] == "off"
    with pytest.raises(RuntimeError):
        read_notebook(GOOD + "\n# %%\nchanged = True\n")
    light = GOOD.replace("#   kernelspec:", "#   moero:\n#     light: true\n#   kernelspec:")
    assert read_notebook(light).metadata["moero"]["light"] is True


@pytest.mark.slow
def test_a_stalled_cell_fails_the_run_instead_of_hanging(tmp_path, monkeypatch):
    monkeypatch.setenv("MOERO_CELL_TIMEOUT", "2")
    src = write(tmp_path, "stall", HEADER + "\n# %%\nimport time\ntime.sleep(60)\n")
    with pytest.raises(NotebookFailed) as info:
        run_notebook(src, "smoke", tmp_path / "executed", {}, progress_bar=False)
    assert "time.sleep(60)" in info.value.source and info.value.partial.exists()


@pytest.mark.slow
def test_a_notebook_that_needs_another_reruns_when_the_others_results_change(tmp_path, monkeypatch):
    monkeypatch.setenv("MOERO_BUILD_DIR", str(tmp_path / "_build"))
    needing = HEADER.replace("#     name: python3\n", "#     name: python3\n#   moero:\n#     needs: [06_training]\n") \
        + GOOD[len(HEADER):]
    assert needing.count("needs: [06_training]") == 1
    src = write(tmp_path, "reader", needing)
    out, results = tmp_path / "executed", tmp_path / "results"
    upstream = tmp_path / "_build" / "results" / "smoke" / "06_training" / "provenance.json"
    upstream.parent.mkdir(parents=True)
    upstream.write_text('{"complete": true, "started": "1"}')
    assert not run_notebook(src, "smoke", out, {"results_dir": str(results)}, progress_bar=False).skipped
    assert run_notebook(src, "smoke", out, {"results_dir": str(results)}, progress_bar=False).skipped
    upstream.write_text('{"complete": true, "started": "2"}')  # chapter 6 ran again: the reader must follow
    assert not run_notebook(src, "smoke", out, {"results_dir": str(results)}, progress_bar=False).skipped
