"""Siemens raw data through twixtools: the example gre.dat from the twixtools==0.24 sdist, read as (T, Z, C, H, W).

The fixture downloads the sdist once (network to the package registry) and caches gre.dat outside
the repository (``$MOERO_CACHE`` or ``~/.cache/moero``). A failed download fails the test with pip's
message; only a missing ``twixtools`` (the optional extra ``raw``) skips.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from moero.data import twix as raw
from moero.data.digest import file_sha256
from moero.physics.coils import espirit_maps
from moero.physics.fft import ifft2c
from moero.physics.sense import rss, sense_adjoint

try:
    import twixtools  # noqa: F401
except ImportError:  # pragma: no cover - depends on the optional extra
    print("test_raw: twixtools is not installed (pip install 'moero[raw]'): skipping the raw-data tests")
    pytest.skip("twixtools is not installed (optional extra 'raw')", allow_module_level=True)


@pytest.fixture(scope="module")
def gre_dat() -> Path:
    return raw.example_gre_dat()  # raises RawDataUnavailable (a failure, not a skip) when it cannot


def test_example_is_cached_outside_the_repo_and_verified(gre_dat: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(raw.__file__).resolve().parents[1]
    assert gre_dat.is_file() and repo not in gre_dat.resolve().parents
    assert file_sha256(gre_dat) == raw.GRE_SHA256

    def no_network(*args, **kwargs):
        raise AssertionError("example_gre_dat must use the cache, not pip")

    monkeypatch.setattr(subprocess, "run", no_network)
    assert raw.example_gre_dat() == gre_dat


def test_failed_download_names_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(raw.RawDataUnavailable, match="No matching distribution"):
        raw.example_gre_dat(cache_dir=tmp_path)


def test_cache_root_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOERO_CACHE", str(tmp_path / "c"))
    assert raw.cache_root() == tmp_path / "c"
    assert raw.cache_root(tmp_path / "x") == tmp_path / "x"


def test_read_gre_dat(gre_dat: Path) -> None:
    scan = raw.read_twix(gre_dat)
    kspace = scan.kspace
    assert kspace.dtype == torch.complex64 and kspace.shape == (1, 1, 2, 320, 160)  # 2x oversampled readout
    assert scan.header["model"] == "Skyra" and abs(scan.header["field_strength_T"] - 2.89) < 0.01
    # the k-space peak sits at the centre that fft2c expects
    energy = kspace[0, 0].abs().sum(dim=0)
    peak = divmod(int(energy.argmax()), energy.shape[1])
    assert abs(peak[0] - 160) <= 2 and abs(peak[1] - 80) <= 2
    # the image is an object in the middle of the field of view, not noise
    image = rss(ifft2c(kspace[0, 0]))
    centre = image[120:200, 50:110].mean()
    assert centre > 3 * image[:20, :20].mean()
    assert raw.read_twix(gre_dat, remove_os=True).kspace.shape == (1, 1, 2, 160, 160)


def test_espirit_on_real_data_explains_both_coils(gre_dat: Path) -> None:
    kspace = raw.read_twix(gre_dat, remove_os=True).kspace[0, 0]
    # two noisy coils: a higher subspace threshold than for synthetic data keeps noise out of the kernels
    maps = espirit_maps(kspace, 24, kernel=6, threshold=0.05, crop=0.95)
    coils = ifft2c(kspace)
    image = rss(coils)
    obj = image > 0.3 * image.max()
    cropped = rss(maps) == 0
    assert 0.05 < cropped.double().mean() < 0.5  # the empty corners of the field of view are cropped
    assert cropped[obj].double().mean() < 0.01  # the object is not
    residual = (coils - maps * sense_adjoint(kspace, maps))[:, obj]
    assert (residual.norm() / coils[:, obj].norm()) ** 2 < 0.05


def test_read_twix_rejects_bad_input(tmp_path: Path, gre_dat: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        raw.read_twix(tmp_path / "missing.dat")
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="junk.dat"):
        raw.read_twix(junk)
    with pytest.raises(ValueError, match="select"):
        raw.read_twix(gre_dat, select={"Foo": 0})
