"""Readers: MATLAB axis order, undersampled files, fastMRI, lazy windows, and every bad-input case."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from moero.data.matfile import complex_to_h5, write_mat73
from moero.data.readers import (
    DataError,
    load_cmrxrecon,
    load_fastmri,
    read_kspace_window,
    read_manifest,
    volume_shape,
)


def _matlab_array(shape, seed=0):
    """A complex array indexed MATLAB-style ``M[x, y, c, z, t]`` whose values encode their index."""
    idx = np.indices(shape)
    code = sum(i * 10**p for p, i in enumerate(idx))  # x + 10 y + 100 c + ...
    return (code + 1j * np.random.default_rng(seed).standard_normal(shape)).astype(np.complex64)


def _write_raw(path, variables):
    """What MATLAB writes: column-major arrays, i.e. HDF5 dims reversed (np.transpose), compound complex."""
    with h5py.File(path, "w") as f:
        for name, arr in variables.items():
            raw = np.transpose(arr)  # reverse all axes: MATLAB (nx, ny, ...) -> HDF5 (..., ny, nx)
            f.create_dataset(name, data=complex_to_h5(raw) if np.iscomplexobj(raw) else raw)


def test_matlab_axis_order_hand_built_file(tmp_path):
    nx, ny, nc, nz, nt = 6, 5, 3, 2, 4
    m = _matlab_array((nx, ny, nc, nz, nt))
    path = tmp_path / "cine_sax.mat"
    _write_raw(path, {"kspace_full": m})
    vol = load_cmrxrecon(path)
    assert vol.key == "kspace_full" and vol.mask is None
    assert vol.shape == (nt, nz, nc, nx, ny)
    expected = np.transpose(m, (4, 3, 2, 0, 1))  # (T, Z, C, H=nx, W=ny)
    np.testing.assert_array_equal(vol.kspace.numpy(), expected)
    assert vol.kspace[3, 1, 2, 5, 4].real == 5 + 10 * 4 + 100 * 2 + 1000 * 1 + 10000 * 3
    assert volume_shape(path) == ("kspace_full", (nt, nz, nc, nx, ny))
    # no time axis (T1w/T2w/black-blood): MATLAB (nx, ny, nc, nz) -> T = 1
    m4 = _matlab_array((nx, ny, nc, nz))
    _write_raw(tmp_path / "T1w.mat", {"kspace": m4})
    vol4 = load_cmrxrecon(tmp_path / "T1w.mat")
    np.testing.assert_array_equal(vol4.kspace[0].numpy(), np.transpose(m4, (3, 2, 0, 1)))


def test_write_mat73_matches_matlab_order(tmp_path):
    arr = torch.randn(2, 3, 4, 8, 5, dtype=torch.complex64).numpy()  # (T, Z, C, H, W)
    path = write_mat73(tmp_path / "x.mat", {"kspace": arr})
    with h5py.File(path, "r") as f:
        raw = f["kspace"][()]
        assert raw.shape == (2, 3, 4, 5, 8)  # h5py sees (nt, nz, nc, ny, nx)
        assert f["kspace"].attrs["MATLAB_class"] == b"single"
    np.testing.assert_array_equal(raw["real"][1, 2, 3, 4, 7], arr[1, 2, 3, 7, 4].real)
    np.testing.assert_array_equal(load_cmrxrecon(path).kspace.numpy(), arr)


def test_undersampled_kus_with_mask_in_file_and_separate(tmp_path):
    nx, ny, nc, nz, nt = 8, 7, 2, 1, 3
    m = _matlab_array((nx, ny, nc, nz, nt))
    mask = np.zeros((nx, ny, nt), np.float64)  # MATLAB (nx, ny, nt), varies over time
    mask[:, [0, 3], 0] = 1
    mask[:, [1, 3], 1] = 1
    mask[:, [2, 3], 2] = 1
    _write_raw(tmp_path / "kus.mat", {"kus": m * mask[:, :, None, None, :], "mask": mask})
    vol = load_cmrxrecon(tmp_path / "kus.mat")
    assert vol.key == "kus" and vol.mask.dtype == torch.bool and vol.mask.shape == (nt, nx, ny)
    assert vol.mask[1, :, 1].all() and not vol.mask[0, :, 1].any()
    _write_raw(tmp_path / "kus_only.mat", {"kus": m})
    _write_raw(tmp_path / "mask2d.mat", {"mask": mask[:, :, 0]})  # (nx, ny): same for every frame
    vol2 = load_cmrxrecon(tmp_path / "kus_only.mat", mask_path=tmp_path / "mask2d.mat")
    assert vol2.mask.shape == (nt, nx, ny) and vol2.mask[2, :, 0].all()
    with pytest.raises(DataError, match="mask"):
        load_cmrxrecon(tmp_path / "kus_only.mat")  # no mask anywhere
    _write_raw(tmp_path / "badmask.mat", {"mask": np.ones((nx, ny + 1))})
    with pytest.raises(DataError, match=r"badmask\.mat.*'mask'.*does not match kus"):
        load_cmrxrecon(tmp_path / "kus_only.mat", mask_path=tmp_path / "badmask.mat")
    _write_raw(tmp_path / "badmask_t.mat", {"mask": np.ones((nx, ny, nt + 1))})
    with pytest.raises(DataError, match="does not match kus"):
        load_cmrxrecon(tmp_path / "kus_only.mat", mask_path=tmp_path / "badmask_t.mat")


@pytest.mark.parametrize("case", ["missing_key", "real_dtype", "wrong_rank", "nan", "inf", "truncated", "not_hdf5",
                                  "no_file"])
def test_bad_input_names_file_and_key(tmp_path, case):
    path = tmp_path / f"{case}.mat"
    good = torch.randn(2, 1, 2, 8, 6, dtype=torch.complex64).numpy()
    if case == "missing_key":
        write_mat73(path, {"image": good})
        key = "kspace_full/kspace"
    elif case == "real_dtype":
        write_mat73(path, {"kspace": good.real.copy()})
        key = "kspace"
    elif case == "wrong_rank":
        write_mat73(path, {"kspace": good[0, 0, 0, 0]})
        key = "kspace"
    elif case in ("nan", "inf"):
        good[1, 0, 1, 3, 2] = np.nan if case == "nan" else np.inf
        write_mat73(path, {"kspace": good})
        key = "kspace"
    elif case == "truncated":
        big = torch.randn(4, 2, 4, 64, 64, dtype=torch.complex64).numpy()
        write_mat73(path, {"kspace": big})
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        key = None
    elif case == "not_hdf5":
        path.write_text("this is not an HDF5 file\n" * 40)
        key = None
    else:
        key = None
    with pytest.raises(DataError) as info:
        load_cmrxrecon(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(path) in str(err) and err.file == str(path)
    if key:
        assert err.key == key and repr(key) in str(err)
    if case in ("nan", "inf"):
        assert "NaN or Inf" in str(err)
        # the lazy reader finds it too, but only in the window that holds it
        read_kspace_window(path, 0, [0, 0])
        with pytest.raises(DataError, match="NaN or Inf"):
            read_kspace_window(path, 0, [0, 1])


def test_read_kspace_window_is_a_lazy_slice(tmp_path):
    arr = torch.randn(5, 3, 2, 8, 7, dtype=torch.complex64).numpy()
    path = write_mat73(tmp_path / "cine.mat", {"kspace": arr})
    window = read_kspace_window(path, 2, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(window.numpy(), arr[[0, 0, 0, 1, 2], 2])
    with pytest.raises(DataError, match="slice 3 out of range"):
        read_kspace_window(path, 3, [0])
    with pytest.raises(DataError, match="frames"):
        read_kspace_window(path, 0, [4, 5])


def test_fastmri_reader(tmp_path):
    ks = torch.randn(3, 4, 10, 6, dtype=torch.complex64).numpy()  # (slices, coils, H, W)
    path = tmp_path / "file1000001.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=ks)
        f.create_dataset("mask", data=np.array([1, 0, 1, 1, 0, 1], np.float32))
        f.attrs["acquisition"] = "CORPD_FBK"
    vol = load_fastmri(path)
    assert vol.shape == (1, 3, 4, 10, 6)
    np.testing.assert_array_equal(vol.kspace[0].numpy(), ks)
    assert vol.mask.shape == (1, 10, 6) and vol.mask[0, :, 1].sum() == 0 and vol.mask[0, :, 0].all()
    np.testing.assert_array_equal(read_kspace_window(path, 1, [0, 0, 0], fmt="fastmri").numpy(), ks[[1, 1, 1]])
    single = tmp_path / "single.h5"
    with h5py.File(single, "w") as f:
        f.create_dataset("kspace", data=ks[:, 0])
    assert load_fastmri(single).shape == (1, 3, 1, 10, 6)
    with h5py.File(tmp_path / "nokey.h5", "w") as f:
        f.create_dataset("reconstruction_rss", data=np.zeros((3, 4, 4), np.float32))
    with pytest.raises(DataError, match="'kspace'"):
        load_fastmri(tmp_path / "nokey.h5")


def test_read_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="manifest.csv"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("file,subject\na.mat,P001\n")
    with pytest.raises(DataError, match="lacks columns"):
        read_manifest(tmp_path)
