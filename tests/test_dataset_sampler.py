"""SliceDataset (lazy windows, masks seeded by (seed, epoch, index), errors) and BalancedSampler (eq. (10))."""

from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch

import moero.physics.masks as masks
from moero.data.dataset import SliceDataset, adjacent_frames, example_seed, is_cyclic, r_eff_summary
from moero.data.matfile import write_mat73
from moero.data.readers import DataError, load_cmrxrecon, read_manifest
from moero.data.sampler import BalancedSampler, balance_weights
from moero.physics.fft import ifft2c
from moero.physics.sense import rss


@pytest.fixture(scope="module")
def root(smoke_data):
    return smoke_data


def test_adjacent_frames_clamped():
    assert adjacent_frames(0, 5, 12) == [0, 0, 0, 1, 2]
    assert adjacent_frames(11, 5, 12) == [9, 10, 11, 11, 11]
    assert adjacent_frames(0, 5, 1) == [0] * 5
    assert adjacent_frames(4, 3, 9) == [3, 4, 5]


def test_examples_match_the_files(root):
    ds = SliceDataset(root, split="train", frames=5, mask_sampler=masks.MaskSampler(accelerations=(4, 8)), seed=1)
    rows = [r for r in read_manifest(root) if r["split"] == "train"]
    assert len(ds) == sum(r["frames"] * r["slices"] for r in rows) and len(ds.records) == len(rows)
    assert {ds[i]["meta"]["split"] for i in range(0, len(ds), 7)} == {"train"}
    for index in (0, len(ds) // 2, len(ds) - 1):
        ex = ds[index]
        f, z, t = ds.locate(index)
        full = load_cmrxrecon(ds.records[f]["path"]).kspace
        window = adjacent_frames(t, 5, full.shape[0], cyclic=is_cyclic(ds.records[f]))
        assert ex["meta"]["frames"] == window and ex["meta"]["slice"] == z and ex["meta"]["frame"] == t
        torch.testing.assert_close(ex["kspace"], full[window, z])
        assert ex["kspace"].dtype == torch.complex64 and ex["kspace"].shape[0] == 5
        assert ex["mask"].dtype == torch.bool and ex["mask"].shape == (5, *ex["kspace"].shape[-2:])
        torch.testing.assert_close(ex["masked_kspace"], ex["kspace"] * ex["mask"][:, None])
        torch.testing.assert_close(ex["target"], rss(ifft2c(full[t, z])))
        assert ex["target"].dtype == torch.float32
        assert ex["meta"]["mask_kind"] in masks.KINDS and ex["meta"]["acceleration"] in (4, 8)
        for key in ("file", "centre", "vendor", "modality", "view", "pathology"):
            assert ex["meta"][key] == ds.records[f][key]


def test_mask_draws_depend_only_on_seed_epoch_index(root):
    sampler = masks.MaskSampler()
    a = SliceDataset(root, split="train", mask_sampler=sampler, seed=5)
    b = SliceDataset(root, split="train", mask_sampler=sampler, seed=5)
    order = [7, 3, 0]
    first = {i: a[i]["mask"] for i in order}
    for i in reversed(order):  # another "worker", other order: same draws
        assert torch.equal(b[i]["mask"], first[i])
    assert not all(torch.equal(a[i]["mask"], a[i + 1]["mask"]) for i in range(4))
    a.set_epoch(1)
    assert not all(torch.equal(a[i]["mask"], first[i]) for i in order)


def test_example_seeds_are_distinct_over_the_whole_seed_epoch_index_stream_grid():
    """No two (seed, epoch, index, stream) share a seed: e.g. seed 5 epoch 1 must not replay seed 6 epoch 0."""
    grid = [(s, e, i, st) for s in range(4) for e in range(4) for i in range(6) for st in range(2)]
    seeds = [example_seed(*key) for key in grid]
    assert len(set(seeds)) == len(grid)
    assert all(0 <= x < 2**63 for x in seeds)
    assert example_seed(5, 1, 3) == example_seed(5, 1, 3)
    # neighbouring keys give unrelated streams, not shifted copies of one stream
    draws = [torch.rand(8, generator=torch.Generator().manual_seed(example_seed(*key))) for key in grid[:48]]
    assert len({tuple(d.tolist()) for d in draws}) == 48
    for shift in range(1, 8):
        assert not any(torch.equal(d[shift:], e[:-shift]) for d in draws for e in draws)


def test_augment_contract(root):
    calls = []

    def augment(example, generator):
        calls.append((example["meta"]["frame"], torch.rand(1, generator=generator).item()))
        out = dict(example)
        out["kspace"] = example["kspace"] * 2
        out["masked_kspace"] = out["kspace"] * example["mask"][:, None]
        return out

    ds = SliceDataset(root, split="val", augment=augment, mask_sampler=masks.MaskSampler(), seed=2)
    plain = SliceDataset(root, split="val", mask_sampler=masks.MaskSampler(), seed=2)
    ex, ref = ds[1], plain[1]
    torch.testing.assert_close(ex["kspace"], 2 * ref["kspace"])
    assert torch.equal(ex["mask"], ref["mask"])
    ds[1]
    assert calls[0] == calls[1]  # the generator is seeded by (seed, epoch, index)


def test_split_modality_filters_and_fixed_shape(root):
    ds = SliceDataset(root, modalities=("Mapping",), shape=(48, 40), frames=3)
    assert {r["modality"] for r in ds.records} == {"Mapping"}
    ex = ds[0]
    assert ex["kspace"].shape[-2:] == (48, 40) and ex["target"].shape == (48, 40)
    assert len(SliceDataset(root, split="no-such-split")) == 0
    with pytest.raises(ValueError, match="on_error"):
        SliceDataset(root, on_error="ignore")


def _copy_subset(root, dest, n):
    rows = read_manifest(root)[:n]
    for r in rows:
        (dest / r["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / r["file"], dest / r["file"])
    return rows


def test_walk_without_manifest_and_skip_bad_files(root, tmp_path):
    rows = _copy_subset(root, tmp_path, 2)
    ds = SliceDataset(tmp_path)  # no manifest: metadata from the path
    assert len(ds.records) == 2
    rec = ds.records[0]
    assert rec["centre"] == rows[0]["centre"] and rec["vendor"] == rows[0]["vendor"] and rec["split"] == "train"
    bad_dir = tmp_path / "MultiCoil/Cine/TrainingSet/FullSample/Center009/GE_15T_Signa/P001"
    bad_dir.mkdir(parents=True)
    (bad_dir / "cine_sax.mat").write_text("not HDF5")
    with pytest.raises(DataError, match="Center009"):
        SliceDataset(tmp_path)
    with pytest.warns(UserWarning, match="skipped"):
        ds = SliceDataset(tmp_path, on_error="skip")
    assert len(ds.records) == 2 and len(ds.skipped) == 1 and "Center009" in ds.skipped[0][0]


def test_nan_file_is_skipped_at_read_time(tmp_path):
    good = torch.randn(3, 1, 2, 8, 6, dtype=torch.complex64).numpy()
    bad = good.copy()
    bad[1, 0, 0, 0, 0] = np.nan
    base = tmp_path / "MultiCoil/Cine/TrainingSet/FullSample/Center001/Siemens_30T_Vida"
    write_mat73(base / "P001/cine_sax.mat", {"kspace": bad})
    write_mat73(base / "P002/cine_sax.mat", {"kspace": good})
    with pytest.raises(DataError, match="NaN"):
        SliceDataset(tmp_path, frames=3)[0]
    ds = SliceDataset(tmp_path, frames=3, on_error="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = ds[0]
    assert "P002" in ex["meta"]["file"] and len(ds.skipped) == 1 and "P001" in ds.skipped[0][0]
    assert any("skipped" in str(w.message) for w in caught)


def test_fastmri_folder(tmp_path):
    for name in ("a.h5", "b.h5"):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("kspace", data=torch.randn(4, 3, 12, 10, dtype=torch.complex64).numpy())
    ds = SliceDataset(tmp_path, frames=3, mask_sampler=masks.MaskSampler(kinds=("uniform",), accelerations=(4,), acs=4))
    assert ds.fmt == "fastmri" and len(ds) == 8
    ex = ds[5]
    assert ex["kspace"].shape == (3, 3, 12, 10) and ex["meta"]["slice"] == 1 and ex["meta"]["file"] == "b.h5"


# ------------------------------------------------------------------ eq. (10)


def test_balance_weights_hand_computed():
    recs = [
        {"modality": "Cine", "view": "sax", "centre": "X"},
        {"modality": "Cine", "view": "sax", "centre": "X"},
        {"modality": "Cine", "view": "sax", "centre": "Y"},
        {"modality": "LGE", "view": "sax", "centre": "Y"},
    ]
    # N = 4. group & modality: G = 2, N/G = 2; Cine n = 3 -> 0.7 (2/3 - 1) + 1 = 0.7667, LGE n = 1 -> 1.7.
    # centre: X, Y both n = 2 -> 1. Cine: 0.7667^2 = 0.588 -> clip 1; LGE: 1.7^2 = 2.89 -> 3.
    assert balance_weights(recs) == [1, 1, 1, 3]
    # 9 vs 1 in every rule: 3.8^3 = 54.9 -> clipped to 8
    many = [{"modality": "Cine", "view": "sax", "centre": "X"}] * 9 + [{"modality": "LGE", "view": "sax",
                                                                          "centre": "Y"}]
    assert balance_weights(many) == [1] * 9 + [8]
    # centre only, m = 1: X, X, Y -> Y: (1.5 / 1 - 1) + 1 = 1.5 -> rounds half up to 2; X: 0.75 -> 1
    three = [{"centre": "X"}, {"centre": "X"}, {"centre": "Y"}]
    assert balance_weights(three, rules=["centre"], m=1.0) == [1, 1, 2]
    assert balance_weights(three, rules=["centre"], m=0.7) == [1, 1, 1]  # 1.35 -> 1
    # X once, Y seven times, m = 0.5: X gets 0.5 (4 / 1 - 1) + 1 = 2.5, half up to 3 (half-to-even would give 2)
    eight = [{"centre": "X"}] + [{"centre": "Y"}] * 7
    assert balance_weights(eight, rules=["centre"], m=0.5) == [3] + [1] * 7
    assert balance_weights(three, rules=[lambda r: r["centre"]], m=1.0, clip=(1, 1)) == [1, 1, 1]
    with pytest.raises(ValueError, match="unknown rule"):
        balance_weights(three, rules=["scanner"])


def test_sampler_epochs_and_ranks():
    recs = [{"modality": "Cine", "view": "sax", "centre": "X"}] * 9 + [{"modality": "LGE", "view": "sax",
                                                                          "centre": "Y"}]
    s = BalancedSampler(recs, seed=3)
    e0 = list(s)
    assert sorted(e0) == sorted(list(range(9)) + [9] * 8)
    assert list(BalancedSampler(recs, seed=3)) == e0
    s.set_epoch(1)
    assert list(s) != e0 and sorted(s) == sorted(e0)
    parts = [BalancedSampler(recs, num_replicas=3, rank=r, seed=3) for r in range(3)]
    for p in parts:
        p.set_epoch(2)
    lists = [list(p) for p in parts]
    assert all(len(x) == len(parts[0]) == 6 for x in lists)  # 17 indices padded to 18
    merged = [i for trio in zip(*lists, strict=True) for i in trio]
    assert merged == parts[0].epoch_indices()
    with pytest.raises(ValueError, match="rank"):
        BalancedSampler(recs, num_replicas=2, rank=2)


def test_sampler_over_slice_dataset(root):
    ds = SliceDataset(root, split="train")
    s = BalancedSampler(ds, seed=0)
    counts = np.bincount(list(s), minlength=len(ds))
    expected = np.asarray(s.weights)[ds.example_file]
    np.testing.assert_array_equal(counts, expected)
    assert max(s.weights) > 1  # the smoke set is imbalanced: some files are repeated


# ------------------------------------------------------------------ whole-series masks (issue 14)


def _first_index(ds, predicate):
    return next(i for i in range(len(ds)) if predicate(ds.records[ds.locate(i)[0]], *ds.locate(i)[1:]))


def test_cine_windows_wrap_and_other_series_clamp():
    assert adjacent_frames(0, 5, 12, cyclic=True) == [10, 11, 0, 1, 2]
    assert adjacent_frames(11, 3, 12, cyclic=True) == [10, 11, 0]
    assert adjacent_frames(0, 5, 1, cyclic=True) == [0] * 5
    assert is_cyclic({"modality": "Cine", "file": "x/cine_sax.mat"})
    assert not is_cyclic({"modality": "Mapping", "file": "x/T1map.mat"})


def test_duplicated_frame_in_a_window_carries_the_mask_of_its_original(root):
    sampler = masks.MaskSampler(kinds=("kt_gaussian",), accelerations=(8,))
    ds = SliceDataset(root, frames=5, mask_sampler=sampler, seed=3, modalities=("Mapping",))
    i = _first_index(ds, lambda rec, z, t: t == 0 and rec["num_frames"] >= 3)
    ex = ds[i]
    assert ex["meta"]["frames"][:3] == [0, 0, 0]  # clamped: frame 0 three times
    assert torch.equal(ex["mask"][0], ex["mask"][2]) and torch.equal(ex["mask"][1], ex["mask"][2])
    assert not torch.equal(ex["mask"][2], ex["mask"][3])  # kt: the next frame has its own lines
    # the same (file, slice, epoch) seen from another window: frame 0 under the same mask
    later = ds[i + 2]
    assert later["meta"]["frames"][0] == 0 and torch.equal(later["mask"][0], ex["mask"][2])
    torch.testing.assert_close(later["masked_kspace"][0], ex["masked_kspace"][2])
    # cine: the wrapped window carries the series' last frames with their own masks
    cine = SliceDataset(root, frames=5, mask_sampler=sampler, seed=3, modalities=("Cine",))
    j = _first_index(cine, lambda rec, z, t: t == 0)
    nt = cine.records[cine.locate(j)[0]]["num_frames"]
    first, last = cine[j], cine[j + nt - 1]
    assert first["meta"]["frames"][:2] == [nt - 2, nt - 1] and last["meta"]["frame"] == nt - 1
    assert torch.equal(first["mask"][1], last["mask"][2])
    cine.set_epoch(1)
    assert not torch.equal(cine[j]["mask"], first["mask"])  # a new series draw each epoch


def test_static_window_union_equals_its_single_mask(root):
    sampler = masks.MaskSampler(kinds=("kt_gaussian", "kt_radial"), accelerations=(8, 16))
    ds = SliceDataset(root, frames=5, mask_sampler=sampler, seed=4, modalities=("T1w", "T2w", "BlackBlood", "LGE"))
    for i in range(min(len(ds), 6)):
        ex = ds[i]
        f, z, _ = ds.locate(i)
        assert ds.records[f]["num_frames"] == 1 and ex["meta"]["frames"] == [0] * 5
        union = ex["mask"].any(dim=0)
        assert torch.equal(union, ex["mask"][2])
        kind, r = ex["meta"]["mask_kind"], ex["meta"]["acceleration"]
        h, w = ex["mask"].shape[-2:]
        if kind == "kt_radial":  # deterministic: the series' frame 0 at this ACS width
            expected = masks.make_mask(kind, (1, h, w), r, acs=ex["meta"]["acs"], spokes=masks.matched_spokes(r, h, w))
            assert torch.equal(ex["mask"][2], expected[0])
        assert masks.effective_acceleration(union) == pytest.approx(ex["meta"]["r_eff"])


def test_kt_radial_rotates_with_the_frame_index_over_the_series(root):
    sampler = masks.MaskSampler(kinds=("kt_radial",), accelerations=(8,))
    ds = SliceDataset(root, frames=3, mask_sampler=sampler, seed=0, modalities=("Cine",))
    f, z, _ = ds.locate(0)
    nt, h, w = ds.records[f]["num_frames"], ds.records[f]["readout"], ds.records[f]["phase"]
    series = masks.make_mask("kt_radial", (nt, h, w), 8, acs=masks.acs_width(w), spokes=masks.matched_spokes(8, h, w))
    for t in range(nt):
        ex = ds[t]
        assert ex["meta"]["frame"] == t and torch.equal(ex["mask"][1], series[t])
        assert torch.equal(ex["mask"], series[ex["meta"]["frames"]])


def test_r_eff_and_acs_width_are_reported_per_example(root):
    ds = SliceDataset(root, split="train", frames=3, mask_sampler=masks.MaskSampler(accelerations=(4, 16)), seed=2)
    metas = []
    for i in range(0, len(ds), max(len(ds) // 12, 1)):
        ex = ds[i]
        m = ex["meta"]
        h, w = ex["mask"].shape[-2:]
        assert m["r_eff"] == pytest.approx(h * w / float(ex["mask"][1].sum()))
        assert 1 < m["r_eff"] <= m["acceleration"] * 1.5
        limit = min(h, w) if m["mask_kind"] == "kt_radial" else w
        assert m["acs"] == min(masks.acs_width(w), limit) == ex["num_low_frequencies"]
        metas.append(m)
    summary = r_eff_summary(metas)
    assert sum(row["examples"] for row in summary) == len(metas)
    for row in summary:
        picked = [m["r_eff"] for m in metas if (m["mask_kind"], m["acceleration"]) == (row["mask_kind"],
                                                                                       row["acceleration"])]
        assert row["r_eff_mean"] == pytest.approx(sum(picked) / len(picked))
        assert row["r_eff_min"] <= row["r_eff_mean"] <= row["r_eff_max"]
