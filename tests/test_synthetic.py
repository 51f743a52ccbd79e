"""The synthetic CMRxRecon-layout generator: layout, MATLAB format, determinism, physics choices."""

from __future__ import annotations

import math
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
        torch.testing.assert_close(syn.centre_crop_kspace(x, *small), ref, atol=1e-4, rtol=1e-4)


def _area(anat, plane, c, label, pixel=0.75, span=70.0, resp=0.0, offset=(0.0, 0.0)):
    """Area (mm^2) of ``label`` in a frame: the image of one-hot tissue values, summed (partial volume counts)."""
    values = np.zeros(syn.NUM_LABELS, np.float32)
    values[label] = 1.0
    n = int(2 * span / pixel)
    xs, ys = syn.pixel_axis(n, pixel) + offset[0], syn.pixel_axis(n, pixel) + offset[1]
    return float(syn.render_image(anat, plane, c, resp, "none", values, xs, ys).sum()) * pixel**2


def _pose_sax(anat, c, u_frac):
    """A short-axis plane at ``u_frac`` of the LV's length from its (moving) base at contraction ``c``."""
    pose = syn.heart_pose(anat, c, 0.0)
    plane = syn.view_plane(anat, "sax", 0.5)
    centre = pose["B"] + u_frac * pose["len"] * pose["L"]
    return syn.Plane(centre, plane.e_r, plane.e_p), pose


def test_wall_thickening_conserves_myocardial_volume_and_ef_is_physiological():
    efs = []
    for subject in range(2):
        anat = syn.subject_anatomy(0, subject, "none")
        vols = []
        for c in (0.0, 1.0):  # LV pool volume from a dense short-axis stack that follows the base
            areas = []
            for k in range(10):
                plane, pose = _pose_sax(anat, c, (k + 0.5) / 10)
                areas.append(_area(anat, plane, c, syn.LV, pixel=1.0, span=45.0))
            vols.append(sum(areas) * pose["len"] / 10)
            # the myocardial half-ellipsoid keeps its volume: (r + d)^2 (L + 0.55 d) - r^2 L
            d, r, length = pose["d"], pose["r"], pose["len"]
            myo = (r + d) ** 2 * (length + 0.55 * d) - r**2 * length
            if c == 0.0:
                myo0, d0 = myo, d
        assert myo == pytest.approx(myo0, rel=1e-6) and d > 1.2 * d0  # the wall thickens, its volume stays
        efs.append(1 - vols[1] / vols[0])
        assert 0.45 < efs[-1] < 0.78 and abs(efs[-1] - anat["ef"]) < 0.08, (subject, efs[-1], anat["ef"])
    assert abs(efs[0] - efs[1]) > 0.01  # subjects differ
    dilated = syn.subject_anatomy(0, 0, "dilated")
    assert 1 - (1 - dilated["radial_shortening"]) ** 2 * (1 - dilated["long_shortening"]) < 0.4


def test_cardiac_cycle_and_long_axis_base_to_apex_motion():
    c = [syn.cardiac_contraction(t / 12) for t in range(12)]
    assert c[0] == 0 and max(c) == pytest.approx(1.0, abs=0.02) and c.index(max(c)) == 4  # ES at 35 % of RR
    assert all(c[t] < c[t + 1] for t in range(4)) and all(c[t] >= c[t + 1] for t in range(4, 11))
    anat = syn.subject_anatomy(0, 2, "none")
    # in a 4-chamber view the LV cavity (below the end-systolic mitral plane) shrinks: it narrows, its base descends
    plane = syn.view_plane(anat, "lax_4ch")
    ed, es = syn.heart_pose(anat, 0.0, 0.0), syn.heart_pose(anat, 1.0, 0.0)
    values = np.zeros(syn.NUM_LABELS, np.float32)
    values[syn.LV] = 1.0
    axis = syn.pixel_axis(230, 1.0)
    world = torch.stack(plane.world(axis, axis), -1).double().numpy()
    below = torch.from_numpy((world - es["B"]) @ ed["L"] > 3)  # below the end-systolic mitral plane
    lv = [float(syn.render_image(anat, plane, cc, 0.0, "none", values, axis, axis)[below].sum()) for cc in (0.0, 1.0)]
    assert lv[1] < 0.8 * lv[0] and 0.1 <= anat["long_shortening"] <= 0.15
    np.testing.assert_allclose(ed["apex"], es["apex"])  # the apex stays, the base descends towards it
    descent = float(np.dot(es["B"] - ed["B"], ed["L"]))
    assert descent == pytest.approx(anat["long_shortening"] * anat["long_axis"], rel=1e-6)


def test_cine_frames_differ_between_diastole_and_systole(smoke_root):
    row = next(r for r in read_manifest(smoke_root) if r["name"] == "cine_sax")
    k = load_cmrxrecon(smoke_root / row["file"]).kspace[:, 0]
    h, w = k.shape[-2:]
    k = k[..., h // 4 : h - h // 4, w // 4 : w - w // 4]  # low-pass: frame-to-frame noise counts less
    img = ifft2c(k).abs().pow(2).sum(1).sqrt()
    es = round(0.35 * img.shape[0])
    systole = float((img[es] - img[0]).norm() / img[0].norm())
    neighbours = float((img[-1] - img[0]).norm() / img[0].norm())
    assert systole > 0.05 and systole > neighbours  # late diastole (atrial kick) is closer to ED than ES is


def test_partial_volume_at_edges_and_area_independent_of_the_grid():
    anat = syn.subject_anatomy(0, 1, "none")
    plane = syn.view_plane(anat, "sax", 0.8)
    values = np.zeros(syn.NUM_LABELS, np.float32)
    values[syn.LV] = 1.0
    axis = syn.pixel_axis(120, 1.5)
    img = syn.render_image(anat, plane, 0.3, 0.0, "none", values, axis, axis)
    edge = ((img > 0.05) & (img < 0.95)).sum()
    assert edge > 20 and float(img.max()) <= 1.0 + 1e-6  # fractional coverage along the boundary
    coarse = _area(anat, plane, 0.3, syn.LV, pixel=1.5, span=90.0)
    fine = _area(anat, plane, 0.3, syn.LV, pixel=0.375, span=90.0)
    assert coarse == pytest.approx(fine, rel=0.02)


def test_views_are_planes_through_one_body():
    """SAX planes are perpendicular to the LV long axis, long-axis planes contain it; the axis points left,
    anterior and inferior; the 4-chamber plane holds the RV, the 2-chamber plane does not."""
    for subject in range(4):
        anat = syn.subject_anatomy(0, subject, "none")
        ax = syn.heart_axes(anat)
        lax = ax["L"]
        assert lax[0] > 0.3 and lax[1] < -0.3 and lax[2] < -0.3
        for view in syn.VIEWS:
            plane = syn.view_plane(anat, view, 0.5)
            n = plane.normal
            assert abs(np.linalg.norm(n) - 1) < 1e-9 and abs(plane.e_r[2]) < 1e-9  # readout horizontal
            if view == "sax":
                assert abs(abs(float(np.dot(n, lax))) - 1) < 1e-9
            else:
                assert abs(float(np.dot(n, lax))) < 1e-9
        pose = syn.heart_pose(anat, 0.0, 0.0)
        rv_4ch = abs(float(np.dot(pose["rv_c"] - syn.view_plane(anat, "lax_4ch").centre,
                                  syn.view_plane(anat, "lax_4ch").normal)))
        rv_2ch = abs(float(np.dot(pose["rv_c"] - syn.view_plane(anat, "lax_2ch").centre,
                                  syn.view_plane(anat, "lax_2ch").normal)))
        assert rv_4ch < 5 < rv_2ch
        # the torso and the lungs change between views: the same subject's planes see other tissue
        areas = {v: _area(anat, syn.view_plane(anat, v, 0.5), 0.0, syn.LUNG, pixel=4.0, span=180.0) for v in syn.VIEWS}
        assert max(areas.values()) > 1.3 * min(areas.values())


def test_bar_sax_and_four_chamber_differ_and_blood_is_bright(smoke_root):
    """Issue 26's bar: median NCC of cine SAX (centre slice) vs 4-chamber RSS < 0.5 (smoke from the files,
    cpu simulated); cine blood/myocardium >= 2 (smoke files and some cpu subjects, partial volume fitted)."""
    from moero.data.synthetic import checks

    smoke = checks.view_similarity("smoke", root=smoke_root)
    cpu = checks.view_similarity("cpu")
    assert smoke and len(cpu) >= 3
    assert float(np.median(smoke)) < 0.5 and float(np.median(cpu)) < 0.5, (smoke, cpu)
    specs = {s.relpath: s for s in syn.plan_dataset("smoke", 0) if s.name == "cine_sax"}
    ratios = [checks.blood_myocardium_ratio(s, kspace=load_cmrxrecon(smoke_root / path).kspace)
              for path, s in specs.items()]
    cpu_cines = [s for s in syn.plan_dataset("cpu", 0) if s.name == "cine_sax"]
    ratios += [checks.blood_myocardium_ratio(s) for s in cpu_cines[::8]]
    assert not any(math.isnan(r) for r in ratios) and float(np.median(ratios)) >= 2.0 and min(ratios) > 1.8, ratios
    for field_t in (1.5, 3.0, 5.0):
        sig = syn.tissue_signal("cine", 0, 12, field_t)
        assert sig[syn.LV] > 2.5 * sig[syn.MYO] and sig[syn.FAT] > sig[syn.MYO]  # bright blood, bright fat


def test_same_field_of_view_at_every_size_and_cmrxrecon_matrices_at_gpu():
    for v in syn.VENDORS.values():
        fovs = []
        for size in ("smoke", "cpu", "gpu"):
            nx, ny = syn.vendor_matrix(v, syn.SIZES[size].matrix_scale)
            assert nx % 2 == 0 and ny % 2 == v.matrix[1] % 2
            fovs.append((syn.pixel_size_mm(v, nx) * nx / 2, syn.pixel_size_mm(v, nx) * ny))
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
    normal, dilated = syn.subject_anatomy(0, 5, "none"), syn.subject_anatomy(0, 5, "dilated")
    assert dilated["r_endo"] > normal["r_endo"] and dilated["ef"] < normal["ef"]


def test_plane_traces_on_localisers():
    """The short-axis stack cuts the 4-chamber plane in parallel segments perpendicular to the LV axis."""
    anat = syn.subject_anatomy(0, 0, "none")
    four = syn.view_plane(anat, "lax_4ch")
    lax = syn.heart_axes(anat)["L"]
    axis_2d = np.array([np.dot(lax, four.e_r), np.dot(lax, four.e_p)])
    offsets = []
    for pos in (0.2, 0.5, 0.8):
        seg = syn.plane_trace(syn.view_plane(anat, "sax", pos), (190.0, 180.0), four, (190.0, 190.0))
        assert seg is not None
        direction = seg[1] - seg[0]
        assert abs(float(np.dot(direction, axis_2d))) < 1e-6 * np.linalg.norm(direction)
        offsets.append(float(np.dot(seg[0], axis_2d)))
    assert offsets[0] < offsets[1] < offsets[2]  # base to apex
    assert syn.plane_trace(syn.axial_plane(500.0), (190.0, 180.0), syn.axial_plane(0.0), (190.0, 190.0)) is None
