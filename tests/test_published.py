"""Published results: committed results of a heavier profile are found, shown with their provenance, flagged
when the code changed since, checked against this build's run, and copied only whole and from a clean commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moero.book import show
from moero.book.publish import MAX_FILE_BYTES, publish, wall_time_rows
from moero.book.run import HISTORY, code_hashes, start_run
from moero.cli import main


def committed(root: Path, profile: str, notebook: str, verdicts: list[dict] | None = None,
              commit: str = "0123456789abcdef") -> Path:
    """A complete results folder of ``profile`` for ``notebook`` under ``root``, as publish leaves it."""
    folder = root / profile / notebook
    run = start_run(notebook, profile="smoke", results_dir=folder)
    run.table(verdicts or [{"comparison": "a vs b", "verdict": "holds", "ours": 0.02}], "verdicts",
              caption="committed verdicts")
    run.statement("setting", "Profile 'cpu-long': 3 epochs, 5 seeds.")
    meta = run.finish()
    meta.update(profile=profile, commit=commit)
    (folder / "provenance.json").write_text(json.dumps(meta))
    return folder


def test_a_chapter_shows_the_heaviest_complete_committed_results_of_a_heavier_profile(tmp_path):
    run = start_run("07_augmentation_ablation", profile="smoke", results_dir=tmp_path / "own")
    src = show.results_source("07_augmentation_ablation", run, root=tmp_path / "book")
    assert src.kind == "smoke" and src.folder == tmp_path / "own" and not src.published
    long = committed(tmp_path / "book", "cpu-long", "07_augmentation_ablation")
    src = show.results_source("07_augmentation_ablation", run, root=tmp_path / "book")
    assert src.kind == "cpu-long" and src.folder == long and src.published and "0123456789" in src.note
    gpu = committed(tmp_path / "book", "gpu", "07_augmentation_ablation")
    meta = json.loads((gpu / "provenance.json").read_text())
    (gpu / "provenance.json").write_text(json.dumps({**meta, "complete": False}))  # an unfinished run is ignored
    assert show.results_source("07_augmentation_ablation", run, root=tmp_path / "book").kind == "cpu-long"
    (gpu / "provenance.json").write_text(json.dumps(meta))
    assert show.results_source("07_augmentation_ablation", run, root=tmp_path / "book").kind == "gpu"
    # a run of the published profile itself (or a heavier one) shows its own results
    assert show.published_results("07_augmentation_ablation", "cpu-long", tmp_path / "book").kind == "gpu"
    assert show.published_results("07_augmentation_ablation", "gpu", tmp_path / "book") is None


def test_committed_results_from_older_code_are_flagged(tmp_path):
    folder = committed(tmp_path / "book", "cpu-long", "07_augmentation_ablation")
    src = show.published_results("07_augmentation_ablation", "smoke", tmp_path / "book")
    assert src.meta["code"] == code_hashes("07_augmentation_ablation")
    assert show.staleness(src, "07_augmentation_ablation") == ""
    meta = json.loads((folder / "provenance.json").read_text())
    for what, named in (("chapter", "notebooks/07_augmentation_ablation.py"), ("science", "science layers")):
        changed = {**meta, "code": {**meta["code"], what: "0" * 64}}
        (folder / "provenance.json").write_text(json.dumps(changed))
        text = show.staleness(show.published_results("07_augmentation_ablation", "smoke", tmp_path / "book"),
                              "07_augmentation_ablation")
        assert named in text and "older version" in text and "0123456789" in text
    (folder / "provenance.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "code"}))
    assert "no code hashes" in show.staleness(show.published_results("07_augmentation_ablation", "smoke",
                                                                     tmp_path / "book"), "07_augmentation_ablation")


def test_published_block_shows_provenance_scale_warning_and_the_committed_tables(tmp_path, monkeypatch):
    own = start_run("07_augmentation_ablation", profile="smoke", results_dir=tmp_path / "own")
    none = show.show_published("07_augmentation_ablation", own, ["verdicts"], root=tmp_path / "book")
    assert "Published results: none" in none.data
    folder = committed(tmp_path / "book", "cpu-long", "07_augmentation_ablation")
    block = show.show_published("07_augmentation_ablation", own, ["verdicts", "absent"], root=tmp_path / "book")
    box, table = block.items  # no warning: the hashes match; a stem the run did not produce is skipped
    assert "cpu-long" in box.data and "3 epochs, 5 seeds" in box.data and "0123456789" in box.data
    assert table.name.startswith("tab-07_augmentation_ablation-published-verdicts") and "a vs b" in table._repr_html_()
    meta = json.loads((folder / "provenance.json").read_text())
    (folder / "provenance.json").write_text(json.dumps({**meta, "code": {**meta["code"], "science": "x"}}))
    block = show.show_published("07_augmentation_ablation", own, ["verdicts"], root=tmp_path / "book")
    assert 'class="admonition warning"' in block.items[1].data and "Older code" in block.items[1].data


def test_the_published_block_repeats_what_the_committed_run_concluded(tmp_path):
    folder = tmp_path / "book" / "cpu-long" / "06_training"
    run = start_run("06_training", profile="smoke", results_dir=folder)
    run.table([{"comparison": "a vs b", "verdict": "inconclusive at this scale", "ours": 0.007}], "verdicts")
    shown = show.reading(run, "The baseline gains +0.0100.", title="Does the baseline flatten?", kind="warning")
    assert "The baseline gains +0.0100." in shown.data and 'class="admonition warning"' in shown.data
    show.reading(run, "Every navigator was fitted.", title="Routing active?")
    # a reading computed again (a cell re-run) replaces the earlier one of its title, in the order of the page
    show.reading(run, "The baseline gains +0.0072 [-0.0099, +0.0244]: not shown to flatten.",
                 title="Does the baseline flatten?", kind="warning")
    meta = run.finish()
    assert [r["title"] for r in meta["readings"]] == ["Routing active?", "Does the baseline flatten?"]
    meta.update(profile="cpu-long", commit="0123456789abcdef")
    (folder / "provenance.json").write_text(json.dumps(meta))
    own = start_run("06_training", profile="smoke", results_dir=tmp_path / "own")
    items = show.show_published("06_training", own, ["verdicts"], root=tmp_path / "book").items
    boxes = [i.data for i in items[2:]]  # after the provenance box and the table
    assert len(boxes) == 2 and "Routing active? (cpu-long run)" in boxes[0]
    assert "+0.0072 [-0.0099, +0.0244]: not shown to flatten" in boxes[1] and "+0.0100" not in boxes[1]
    assert 'class="admonition warning"' in boxes[1]


def test_sign_check_sets_this_runs_verdicts_beside_the_committed_ones(tmp_path):
    committed(tmp_path / "book", "cpu-long", "08_model_ablation",
              [{"comparison": "a", "verdict": "holds", "ours": 0.02},
               {"comparison": "b", "verdict": "holds", "ours": -0.01},
               {"comparison": "c", "verdict": "not testable", "ours": float("nan")}])
    own = start_run("08_model_ablation", profile="smoke", results_dir=tmp_path / "own")
    own.table([{"comparison": "a", "verdict": "inconclusive at this scale", "ours": 0.005},
               {"comparison": "b", "verdict": "inconclusive at this scale", "ours": 0.004},
               {"comparison": "c", "verdict": "not testable", "ours": 0.1},
               {"comparison": "only here", "verdict": "holds", "ours": 0.3}], "verdicts")
    src = show.results_source("08_model_ablation", own, root=tmp_path / "book")
    box, summary, table = show.sign_check(src, own).items
    assert "1 of 2 comparisons" in summary.data
    rows = {r["comparison"]: r for r in table.rows}
    assert set(rows) == {"a", "b", "c"}
    assert (rows["a"]["same sign"], rows["b"]["same sign"], rows["c"]["same sign"]) == ("yes", "no", "")
    assert rows["a"]["cpu-long"] == pytest.approx(0.02) and rows["a"]["smoke"] == pytest.approx(0.005)
    alone = show.sign_check(show.results_source("08_model_ablation", own, root=tmp_path / "none"), own)
    assert "Results shown: smoke profile" in alone.data and "<table" not in alone.data


def test_provenance_keeps_the_first_execution_and_the_last_ones(tmp_path):
    folder = tmp_path / "res"
    first = start_run("09_efficiency", profile="smoke", results_dir=folder).finish()
    assert first["history"] == [] and set(first["code"]) == {"chapter", "science"}
    for _ in range(HISTORY + 3):
        last = start_run("09_efficiency", profile="smoke", results_dir=folder).finish()
    assert len(last["history"]) == HISTORY + 1
    assert last["history"][0]["started"] == first["started"] and last["history"][0]["commit"] == first["commit"]
    row = wall_time_rows(tmp_path)  # the first execution's time, not the last one's
    assert row["chapters"] == ["res"] and row["minutes"] == pytest.approx(first["wall_time_s"] / 60)
    interrupted = start_run("09_efficiency", profile="smoke", results_dir=folder)  # never finished
    assert start_run("09_efficiency", profile="smoke", results_dir=folder).history == interrupted.history
    assert wall_time_rows(tmp_path) is None  # no complete execution is left in the folder


def test_publish_copies_small_results_whole_and_refuses_what_it_cannot_vouch_for(tmp_path, monkeypatch):
    build = tmp_path / "build"
    run = start_run("06_training", profile="smoke", results_dir=build / "06_training")
    run.table([{"x": 1}], "small", caption="a small table")
    big = run.path("gallery.png")
    big.write_bytes(b"\x89PNG" + b"0" * (MAX_FILE_BYTES + 1))
    run.files["gallery.png"] = {"kind": "figure", "caption": "big"}
    meta = run.finish()
    prov = build / "06_training" / "provenance.json"
    for commit, message in (("abc+dirty", "clean commit"), ("unknown", "clean commit")):
        prov.write_text(json.dumps({**meta, "commit": commit}))
        with pytest.raises(ValueError, match=message):
            publish("smoke", dest=tmp_path / "book", source=build, chapters=["06_training"])
    prov.write_text(json.dumps({**meta, "commit": "f" * 40}))
    with pytest.raises(ValueError, match="'cpu-long'"):
        publish("cpu-long", dest=tmp_path / "book", source=build, chapters=["06_training"])
    with pytest.raises(FileNotFoundError, match="07_augmentation_ablation"):  # checked before anything is written
        publish("smoke", dest=tmp_path / "book", source=build, chapters=["06_training", "07_augmentation_ablation"])
    assert not (tmp_path / "book").exists()
    report = publish("smoke", dest=tmp_path / "book", source=build, chapters=["06_training"])
    out = tmp_path / "book" / "06_training"
    assert report["06_training"]["copied"] == ["small.csv", "small.md"]
    assert sorted(p.name for p in out.iterdir()) == ["provenance.json", "small.csv", "small.md"]
    copied = json.loads((out / "provenance.json").read_text())
    assert set(copied["files"]) == {"small.csv", "small.md"} and "gallery.png" in copied["omitted"]
    assert copied["commit"] == "f" * 40 and copied["code"] == meta["code"]
    with pytest.raises(FileExistsError, match="--force"):
        publish("smoke", dest=tmp_path / "book", source=build, chapters=["06_training"])
    (build / "06_training" / "small.csv").write_text("x\n2\n")  # changed since its run recorded it
    with pytest.raises(ValueError, match="changed since"):
        publish("smoke", dest=tmp_path / "book", source=build, chapters=["06_training"], force=True)
    assert (out / "small.csv").read_text() != "x\n2\n"  # the committed copy is untouched


def test_publish_command_names_the_missing_results_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOERO_BUILD_DIR", str(tmp_path))
    assert main(["publish", "--profile", "cpu-long"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "06_training" in err[0] and "cpu-long" in err[0]


def test_committed_results_are_small_whole_and_traceable():
    """Every folder under book/results/<profile>/<chapter> is what publish writes: a complete provenance of that
    profile from a clean commit (one of this repository's, where its history is at hand), with the code hashes,
    and exactly the small tables and figures it lists, byte for byte."""
    import re
    import subprocess

    from moero.book.run import file_sha256

    root = Path(__file__).resolve().parents[1] / "book" / "results"
    total = 0
    for prov_path in sorted(root.glob("*/*/provenance.json")):
        folder, meta = prov_path.parent, json.loads(prov_path.read_text())
        assert meta["complete"] and meta["profile"] == folder.parent.name, prov_path
        assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"]), (prov_path, meta["commit"])
        known = subprocess.run(["git", "cat-file", "-e", f"{meta['commit']}^{{commit}}"], cwd=root,
                               capture_output=True)
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=root, capture_output=True,
                                 text=True).stdout.strip()
        assert known.returncode == 0 or shallow != "false", f"{prov_path}: commit {meta['commit']} is not in git"
        assert set(meta["code"]) == {"chapter", "science"} and meta["statements"] is not None
        on_disk = {p.name for p in folder.iterdir()} - {"provenance.json"}
        assert on_disk == set(meta["files"]), prov_path
        for name, entry in meta["files"].items():
            assert name.endswith((".csv", ".md", ".png")) and file_sha256(folder / name) == entry["sha256"], name
            assert (folder / name).stat().st_size <= MAX_FILE_BYTES
            total += (folder / name).stat().st_size
    assert total <= 8 * 2**20, f"committed results take {total / 2**20:.1f} MiB"


def test_a_verdict_rows_effect_is_written_with_its_interval_or_said_unmeasured():
    assert show.effect_text({"ours": "0.0072426", "ci_low": "-0.0098653", "ci_high": "0.02435"}) == \
        "+0.0072 [-0.0099, +0.0244]"
    assert show.effect_text({"ours": 0.0041, "ci_low": "", "ci_high": ""}) == "+0.0041"
    assert show.effect_text({"ours": "nan", "ci_low": "nan", "ci_high": "nan"}) == "not measured"
    assert show.effect_text({}) == "not measured"
