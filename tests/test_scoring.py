"""One engine scores a trained run: ``python -m moero eval`` and the book's chapters agree file by file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from moero.book import evaluation
from moero.cli import main
from moero.eval.evaluate import TEST_SPLITS
from moero.train.scoring import EVAL_SEED, Protocol


@pytest.fixture(scope="module")
def seed3_run(tmp_path_factory, smoke_data) -> tuple[Path, Path]:
    """A promptmr run trained for two steps with seed 3 (not 0: the old CLI drew masks with seed + 2)."""
    tmp = tmp_path_factory.mktemp("scoring")
    root = smoke_data
    run_dir = tmp / "run"
    assert main(["train", "--model", "promptmr", "--preset", "tiny", "--data-root", str(root), "--run-dir",
                 str(run_dir), "--device", "cpu", "--progress", "false", "--max-steps", "2", "--val-every", "0",
                 "--seed", "3", "--image-shape", "[40,40]", "--accelerations", "[8,16]"]) == 0
    return root, run_dir


def _cli_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "eval_files.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _key(row: dict) -> tuple:
    return (row["file"], row.get("kind", ""), float(row["acceleration"]) if row.get("acceleration") else 0.0)


@pytest.mark.parametrize("grid", [True, False], ids=["test-grid", "drawn"])
def test_cli_eval_and_book_agree_file_by_file(seed3_run, tmp_path, capsys, grid):
    root, run_dir = seed3_run
    params = {"eval_files": 1, "eval_shape": [40, 40], "test_accelerations": [8, 16]}
    splits = TEST_SPLITS if grid else ("val",)
    book = evaluation.evaluate_checkpoint(run_dir, None, params, root, splits=splits, grid=grid)
    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(run_dir / "checkpoint.pt"), "--data-root", str(root), "--out", str(out),
            "--device", "cpu", "--max-files", "1", "--eval-shape", "40,40", "--splits", ",".join(splits)]
    assert main(args + (["--test-grid", "8,16"] if grid else [])) == 0
    capsys.readouterr()
    cli = {_key(r): r for r in _cli_rows(out)}
    ours = {_key(r): r for r in book["files"]}
    assert set(cli) == set(ours) and len(ours) >= (2 * len(splits) if grid else 1)
    for key, row in ours.items():
        for metric in ("ssim", "psnr", "nmse"):
            assert float(cli[key][metric]) == pytest.approx(row[metric], rel=1e-9, abs=1e-12), (key, metric)
    if grid:
        assert {r["acceleration"] for r in book["files"]} == {8.0, 16.0}


def test_protocol_seed_changes_masks_and_is_validated(seed3_run, tmp_path):
    root, run_dir = seed3_run
    from moero.train.runs import evaluate_checkpoint

    base = evaluate_checkpoint(run_dir / "checkpoint.pt", str(root), ("val",), device="cpu", max_files=1,
                               progress=False, protocol=Protocol.drawn(shape=(40, 40)))
    other = evaluate_checkpoint(run_dir / "checkpoint.pt", str(root), ("val",), device="cpu", max_files=1,
                                progress=False, protocol=Protocol.drawn(shape=(40, 40), seed=EVAL_SEED + 5))
    assert [r["ssim"] for r in base["files"]] != [r["ssim"] for r in other["files"]]
    with pytest.raises(ValueError, match="seed"):
        Protocol(seed=-1)
    with pytest.raises(ValueError, match="accelerations"):
        Protocol.test_grid([0.5])
    assert json.loads(json.dumps(Protocol.test_grid().tag())) == "0-native-grid-8-16-24"


def test_gallery_reconstructs_the_grid_images_every_method_sees(seed3_run):
    """The gallery shows the scored images under the grid's masks: one row per file and acceleration, the
    Latin-square kind, the same target for every method, and a figure with image and |error| rows."""
    import matplotlib

    matplotlib.use("Agg")
    from moero.book import gallery
    from moero.eval.evaluate import ZeroFilled, latin_kind
    from moero.train.runs import load_trained

    root, run_dir = seed3_run
    model, config, _ = load_trained(run_dir / "checkpoint.pt")
    protocol = Protocol.test_grid([8, 16], shape=(40, 40))
    files = gallery.pick_files(config, root, "test-total", protocol, 2)
    assert files and len(files) <= 2
    rows = gallery.reconstruct_grid({"zero-filled": ZeroFilled(), "trained": model}, config, root, "test-total",
                                    protocol, files)
    assert [(r["file"], r["acceleration"]) for r in rows] == [(f, a) for f in files for a in (8.0, 16.0)]
    kinds = tuple(config.mask_kinds)
    assert all(r["kind"] == latin_kind(r["file"], [8.0, 16.0].index(r["acceleration"]), kinds) for r in rows)
    for r in rows:
        assert all(img.shape == r["target"].shape == (40, 40) for img in r["images"].values())
        assert all(0 < v <= 1 for v in r["ssim"].values())
    # a harder acceleration leaves zero filling worse on the same image
    by = {(r["file"], r["acceleration"]): r["ssim"]["zero-filled"] for r in rows}
    assert any(by[f, 16.0] < by[f, 8.0] for f in files)
    fig = gallery.plot_gallery(rows)
    assert fig.axes[0].get_images() and len(fig.axes) == 2 * len(rows) * 3
