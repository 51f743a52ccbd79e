"""The synthetic CMRxRecon-layout generator: layout, MATLAB format, determinism, physics choices."""

from __future__ import annotations

from collections import Counter

import h5py
import numpy as np
import pytest
import torch

from moero.cli import main as cli_main
from moero.data import synthetic as syn
from moero.data.matfile import read_mat73_header
from moero.data.readers import load_cmrxrecon, read_manifest
from moero.data.synthetic import STAMP_NAME, ensure_synthetic
from moero.physics.fft import fft2c, ifft2c

TINY = {"subjects_per_vendor": 1}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Render as the generator does, on one thread: many small ops oversubscribe shared cores otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return ensure_synthetic(tmp_path_factory.mktemp("syn") / "smoke", size="smoke", seed=0, progress=False)


def test_manifest_matches_files_and_layout(smoke_root):
    rows = read_manifest(smoke_root)
    files = sorted(str(p.relative_to(smoke_root)) for p in smoke_root.rglob("*.mat"))
    assert sorted(r["file"] for r in rows) == files
    for r in rows:
        parts = r["file"].split("/")
        assert parts[0] == "MultiCoil" and parts[2:4] == ["TrainingSet", "FullSample"]
        assert parts[1] == r["modality"] and parts[4] == r["centre"] and parts[5] == r["vendor"]
        assert r["subject"] == "/".join(parts[4:7]) and parts[6].startswith("P")
        assert r["vendor"].split("_")[0] in ("Siemens", "UIH", "GE")
        vol = load_cmrxrecon(smoke_root / r["file"])
        assert vol.shape == (r["frames"], r["slices"], 10, r["readout"], r["phase"])
    # every split, every modality folder, several pathologies; fresh = exactly the held-out centre
    assert {r["split"] for r in rows} == {"train", "val", "test-total", "rare", "fresh"}
    assert {r["modality"] for r in rows} == set(syn.MODALITY_FOLDERS)
    assert {r["centre"] for r in rows if r["split"] == "fresh"} == set(syn.SIZES["smoke"].fresh)
    assert all(r["pathology"] != "none" for r in rows if r["split"] == "rare")
    by_subject = {}
    for r in rows:  # a subject has one split and one pathology across its files
        by_subject.setdefault(r["subject"], set()).add((r["split"], r["pathology"]))
    assert all(len(v) == 1 for v in by_subject.values())
    sick = sum(1 for v in by_subject.values() if next(iter(v))[1] != "none")
    assert 0 < sick < len(by_subject) / 2  # pathologies are a minority
    assert any(r["phase"] % 2 == 1 for r in rows) and any(r["phase"] % 2 == 0 for r in rows)
    assert all(r["readout"] % 2 == 0 for r in rows)


def test_frames_and_time_axis(smoke_root):
    rows = read_manifest(smoke_root)
    frames = syn.SIZES["smoke"].frames
    for r in rows:
        with h5py.File(smoke_root / r["file"], "r") as f:
            ndim = f["kspace"].ndim
        if r["name"] in ("T1w", "T2w", "blackblood", "lge_sax"):
            assert ndim == 4 and r["frames"] == 1  # MATLAB (nx, ny, nc, nz): no time axis
        else:
            assert ndim == 5
            assert r["frames"] == frames["cine" if r["name"].startswith("cine") else r["name"]]
    assert syn.SIZES["cpu"].frames == {"cine": 12, "T1map": 9, "T2map": 3}


def test_files_are_matlab_v73(smoke_root):
    path = smoke_root / read_manifest(smoke_root)[0]["file"]
    head = read_mat73_header(path)
    assert head["text"].startswith("MATLAB 7.3 MAT-file") and head["version"] == 0x0200 and head["endian"] == "IM"
    with h5py.File(path, "r") as f:
        assert f.userblock_size == 512
        ds = f["kspace"]
        assert ds.attrs["MATLAB_class"] == b"single"
        assert ds.dtype.names == ("real", "imag") and ds.dtype["real"] == np.float32


def test_readout_is_oversampled_along_h(smoke_root):
    """The anatomy fills the central half of H (readout, 2x oversampled), and W has little empty margin."""
    row = next(r for r in read_manifest(smoke_root) if r["name"] == "cine_sax")
    img = ifft2c(load_cmrxrecon(smoke_root / row["file"]).kspace[0, 0]).abs().pow(2).sum(0)
    h = img.shape[0]
    central = img[h // 4 : h - h // 4].sum() / img.sum()
    assert central > 0.93
    w = img.shape[1]
    assert img[:, w // 4 : w - w // 4].sum() / img.sum() < 0.9  # the body spans most of the phase FOV


def test_same_seed_same_arrays_other_seed_differs(tmp_path):
    a = syn.generate(tmp_path / "a", "smoke", seed=3, progress=False, overrides=TINY)
    b = syn.generate(tmp_path / "b", "smoke", seed=3, progress=False, overrides=TINY)
    c = syn.generate(tmp_path / "c", "smoke", seed=4, progress=False, overrides=TINY)
    assert a == b
    for row in a:
        x = load_cmrxrecon(tmp_path / "a" / row["file"]).kspace
        y = load_cmrxrecon(tmp_path / "b" / row["file"]).kspace
        assert torch.equal(x, y)
    assert c[0]["file"] == a[0]["file"]  # every subject has a cine_sax: same first file, other content
    z = load_cmrxrecon(tmp_path / "c" / c[0]["file"]).kspace
    assert not torch.equal(load_cmrxrecon(tmp_path / "a" / a[0]["file"]).kspace, z)


def test_ensure_synthetic_is_idempotent_and_stamped(tmp_path):
    root = tmp_path / "d"
    ensure_synthetic(root, size="smoke", seed=1, progress=False)
    manifest = root / "manifest.csv"
    before = manifest.stat().st_mtime_ns
    assert ensure_synthetic(root, size="smoke", seed=1, progress=False) == root
    assert manifest.stat().st_mtime_ns == before
    stamp = (root / STAMP_NAME).read_text()
    assert '"seed": 1' in stamp and syn.code_hash() in stamp
    (root / STAMP_NAME).write_text("{}")  # stale stamp -> regenerate
    ensure_synthetic(root, size="smoke", seed=1, progress=False)
    assert manifest.stat().st_mtime_ns != before
    other = tmp_path / "foreign"
    other.mkdir()
    (other / "real.mat").write_text("x")
    with pytest.raises(ValueError, match="foreign"):
        ensure_synthetic(other, size="smoke", seed=0, progress=False)
    with pytest.raises(ValueError, match="unknown dataset size"):
        syn.generate(tmp_path / "e", "huge", progress=False)


def test_cli_generate_data(tmp_path, capsys):
    root = tmp_path / "cli"
    assert cli_main(["generate-data", "--root", str(root), "--profile", "smoke", "--seed", "0"]) == 0
    assert "files" in capsys.readouterr().out
    assert len(read_manifest(root)) == len(syn.plan_dataset("smoke", 0))


def test_centre_crop_kspace_equals_fft_then_crop():
    for big, small in (((64, 40), (32, 20)), ((66, 42), (32, 21)), ((65, 43), (31, 21))):
        x = torch.randn(2, *big, dtype=torch.complex64)
        k = fft2c(x)
        x0, y0 = big[0] // 2 - small[0] // 2, big[1] // 2 - small[1] // 2
        ref = k[:, x0 : x0 + small[0], y0 : y0 + small[1]]
        torch.testing.assert_close(syn._centre_crop_kspace(x, *small), ref, atol=1e-4, rtol=1e-4)


def _area(anat, view, pos, c, label, pixel=0.75, span=70.0, resp=0.0):
    """Area (mm^2) of ``label`` in a frame: the image of one-hot tissue values, summed (partial volume counts)."""
    values = np.zeros(syn.NUM_LABELS, np.float32)
    values[label] = 1.0
    n = int(2 * span / pixel)
    xs = syn._axis(n, pixel) + anat["heart_x"] + anat["shift_x"]
    ys = syn._axis(n, pixel) + anat["heart_y"] + anat["shift_y"]
    return float(syn.render_image(anat, view, pos, c, resp, "none", values, xs, ys).sum()) * pixel**2


def test_wall_thickening_conserves_myocardial_area_and_ef_is_physiological():
    efs = []
    for subject in range(4):
        anat = syn._subject_anatomy(0, subject, "none")
        pos = 0.8  # apical: no RV, no papillary muscles in the pool
        myo = [_area(anat, "sax", pos, c, syn.MYO) for c in (0.0, 1.0)]
        pool = [_area(anat, "sax", pos, c, syn.LV) for c in (0.0, 1.0)]
        assert myo[1] == pytest.approx(myo[0], rel=0.04)  # the wall thickens, its area stays
        # volume ~ pool area x length: EF from the radial and the long-axis (base-to-apex) shortening
        efs.append(1 - pool[1] / pool[0] * (1 - anat["long_shortening"]))
        assert 0.47 < efs[-1] < 0.73, (subject, efs[-1])
    assert max(efs) - min(efs) > 0.03  # subjects differ
    dilated = syn._subject_anatomy(0, 0, "dilated")
    assert 1 - (1 - dilated["radial_shortening"]) ** 2 * (1 - dilated["long_shortening"]) < 0.4


def test_cardiac_cycle_and_long_axis_base_to_apex_motion():
    c = [syn.cardiac_contraction(t / 12) for t in range(12)]
    assert c[0] == 0 and max(c) == pytest.approx(1.0, abs=0.02) and c.index(max(c)) == 4  # ES at 35 % of RR
    assert all(c[t] < c[t + 1] for t in range(4)) and all(c[t] >= c[t + 1] for t in range(4, 11))
    anat = syn._subject_anatomy(0, 2, "none")
    # in a 4-chamber view left-heart blood (LV shortening as the mitral plane descends, LA filling) shrinks
    lv = [_area(anat, "lax_4ch", 0.5, cc, syn.LV, pixel=1.0, span=115) for cc in (0.0, 1.0)]
    assert lv[1] < 0.85 * lv[0] and 0.1 <= anat["long_shortening"] <= 0.15


def test_cine_frames_differ_between_diastole_and_systole(smoke_root):
    row = next(r for r in read_manifest(smoke_root) if r["name"] == "cine_sax")
    k = load_cmrxrecon(smoke_root / row["file"]).kspace[:, 0]
    h, w = k.shape[-2:]
    k = k[..., h // 4 : h - h // 4, w // 4 : w - w // 4]  # low-pass: frame-to-frame noise counts less
    img = ifft2c(k).abs().pow(2).sum(1).sqrt()
    es = round(0.35 * img.shape[0])
    systole = float((img[es] - img[0]).norm() / img[0].norm())
    neighbours = float((img[-1] - img[0]).norm() / img[0].norm())
    assert systole > 0.08 and systole > neighbours  # late diastole (atrial kick) is closer to ED than ES is


def test_partial_volume_at_edges_and_area_independent_of_the_grid():
    anat = syn._subject_anatomy(0, 1, "none")
    values = np.zeros(syn.NUM_LABELS, np.float32)
    values[syn.LV] = 1.0
    xs = syn._axis(120, 1.5) + anat["heart_x"] + anat["shift_x"]
    ys = syn._axis(120, 1.5) + anat["heart_y"] + anat["shift_y"]
    img = syn.render_image(anat, "sax", 0.8, 0.3, 0.0, "none", values, xs, ys)
    edge = ((img > 0.05) & (img < 0.95)).sum()
    assert edge > 20 and float(img.max()) <= 1.0 + 1e-6  # fractional coverage along the boundary
    coarse = _area(anat, "sax", 0.8, 0.3, syn.LV, pixel=1.5)
    fine = _area(anat, "sax", 0.8, 0.3, syn.LV, pixel=0.375)
    assert coarse == pytest.approx(fine, rel=0.02)


def test_same_field_of_view_at_every_size_and_cmrxrecon_matrices_at_gpu():
    for v in syn.VENDORS.values():
        fovs = []
        for size in ("smoke", "cpu", "gpu"):
            nx, ny = syn.vendor_matrix(v, syn.SIZES[size].matrix_scale)
            assert nx % 2 == 0 and ny % 2 == v.matrix[1] % 2
            fovs.append((syn._pixel_mm(v, nx) * nx / 2, syn._pixel_mm(v, nx) * ny))
        assert fovs[0][0] == pytest.approx(v.fov_mm) and fovs[2][0] == pytest.approx(v.fov_mm)
        assert fovs[0][1] == pytest.approx(fovs[2][1], rel=0.08)  # phase FOV: rounding of small matrices only
        nx, ny = syn.vendor_matrix(v, syn.SIZES["gpu"].matrix_scale)
        assert 150 <= ny <= 250 and 1.8 < nx / ny < 2.5  # 2x oversampled readout
    assert max(s.readout for s in syn.plan_dataset("smoke", 0)) < min(s.readout for s in syn.plan_dataset("gpu", 0))


def test_fresh_centre_is_unseen_hardware_and_rare_cases_come_from_an_unseen_centre():
    for size in ("smoke", "cpu"):
        specs = syn.plan_dataset(size, 0)
        trained = {syn.VENDORS[s.vendor] for s in specs if s.split == "train"}
        fresh = {syn.VENDORS[s.vendor] for s in specs if s.split == "fresh"}
        assert fresh and not fresh & trained
        for v in fresh:
            assert v.field_t not in {t.field_t for t in trained}
            assert v.array_coils not in {t.array_coils for t in trained} and v.layout not in {t.layout for t in trained}
            assert v.breathing and v.fat not in {t.fat for t in trained} and v.snr < min(t.snr for t in trained)
            assert v.matrix not in {t.matrix for t in trained} and v.fov_mm not in {t.fov_mm for t in trained}
        rare_centres = {s.centre for s in specs if s.split == "rare"}
        assert rare_centres and not rare_centres & {s.centre for s in specs if s.split in ("train", "val")}
        assert {s.pathology for s in specs if s.split == "rare"} == set(syn.PATHOLOGIES) or size == "smoke"


def test_coil_shading_is_not_normalised():
    maps = syn.array_coil_maps("Siemens_30T_Vida", 128, 62)
    assert maps.shape[0] == syn.VENDORS["Siemens_30T_Vida"].array_coils
    body = maps.abs().pow(2).sum(0).sqrt()[32:96]  # RSS over the body (central half of the readout)
    assert body.max() / body.min() > 2.0


def test_pathologies_change_anatomy_and_lge_contrast():
    specs = syn.plan_dataset("smoke", 0)
    assert Counter(s.pathology for s in specs)["none"] < len(specs)
    lge = syn.tissue_signal("lge", 0, 1, 1.5)
    assert abs(lge[syn.MYO]) < 0.05 < lge[syn.SCAR]  # myocardium nulled, scar bright
    cine = syn.tissue_signal("cine", 0, 12, 3.0)
    assert cine[syn.LV] > 2 * cine[syn.MYO]  # bright blood
    t1 = [syn.tissue_signal("T1map", t, 9, 1.5)[syn.MYO] for t in range(9)]
    assert t1[0] < 0 < t1[-1]  # inversion recovery crosses zero
    normal, dilated = syn._subject_anatomy(0, 5, "none"), syn._subject_anatomy(0, 5, "dilated")
    assert dilated["r_endo"] > normal["r_endo"] and dilated["ef"] < normal["ef"]
