"""Chapter 02 in a live kernel: moving a slider as a browser does redraws the one figure and its readouts.

The chapter is executed with nbclient on the smoke profile; each move is the comm message a Jupyter
front end sends (``{"method": "update", "state": {"value": ...}}`` to the slider's model id). The time
of one move is a benchmark figure (``python -m benchmarks bench_slider``), not an assertion here.
"""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import pytest

from moero.book.live import LiveNotebook, Update

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "02_kspace_augmentation.py"
pytestmark = pytest.mark.slow

READOUT = re.compile(
    r"added-noise SNR: (?P<added>inf|-?[\d.]+) dB \| k-space SNR: (?P<before>-?[\d.]+) -> (?P<after>-?[\d.]+) dB "
    r"\(drop (?P<drop>-?[\d.]+) dB\) \| motion RMS displacement: (?P<rms>[\d.]+) px over (?P<shots>\d+) shots"
)


def _numbers(text: str) -> dict[str, float]:
    match = READOUT.search(text)
    assert match, f"no readout in {text!r}"
    return {k: float(v) for k, v in match.groupdict().items()}


@pytest.fixture(scope="module")
def chapter(tmp_path_factory, smoke_data):
    tmp = tmp_path_factory.mktemp("live02")
    root = smoke_data
    params = {"profile": "smoke", "data_root": str(root), "results_dir": str(tmp / "results"), "params": {"gre": False}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        with LiveNotebook(CHAPTER, params, cwd=ROOT, timeout=120) as nb:
            yield nb


def _redrawn(update: Update) -> tuple[bytes, dict[str, float]]:
    """The one figure and the one readout a move must redraw in place (and nothing else)."""
    assert not update.errors, update.errors
    assert not update.displays, "a slider move added output instead of redrawing in place"
    pngs, texts = update.by_mime("image/png"), [t for t in update.by_mime("text/plain") if READOUT.search(t)]
    assert len(pngs) == 1 and len(texts) == 1, (len(pngs), texts)
    ids = {u["transient"]["display_id"] for u in update.updates}
    assert len(ids) == 2  # figure and readout, each updated once
    return base64.b64decode(pngs[0]), _numbers(texts[0])


def test_sliders_redraw_the_one_figure_and_its_readouts(chapter):
    code = [c for c in chapter.nb.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(code) if any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c.get("outputs", [])))
    # the sliders, then the figure in a cell of its own (numbered and captioned in the book), then the readout
    outputs = [o for c in code[first : first + 3] for o in c.get("outputs", [])]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    plain = [o.get("data", {}).get("text/plain", "") for o in outputs]
    texts = [t for t in plain if READOUT.search(t)]
    assert len(pngs) == 1 and len(texts) == 1  # the static book: one figure and one readout, initial values
    image, start = base64.b64decode(pngs[0]["data"]["image/png"]), _numbers(texts[0])
    assert start["added"] == pytest.approx(-20 * math.log10(0.1), abs=0.05) and start["shots"] == 8
    assert start["rms"] > 0 and start["drop"] > 0

    sigma = chapter.find("FloatSliderModel", "sigma")
    shift = chapter.find("FloatSliderModel", "range (px)")
    shots = chapter.find("IntSliderModel", "shots")

    noisier_image, noisier = _redrawn(chapter.move(sigma, 0.4))
    assert noisier_image != image
    assert noisier["added"] == pytest.approx(-20 * math.log10(0.4), abs=0.05)
    assert noisier["before"] == start["before"]
    assert noisier["after"] < start["after"] and noisier["drop"] > start["drop"]
    assert noisier["rms"] == start["rms"]  # the motion draw did not change

    quiet_image, quiet = _redrawn(chapter.move(sigma, 0.0))
    assert quiet_image != noisier_image
    assert quiet["added"] == math.inf and quiet["drop"] == 0 and quiet["after"] == quiet["before"]

    still_image, still = _redrawn(chapter.move(shift, 0.0))
    assert still_image != quiet_image and still["rms"] == 0

    moved_image, moved = _redrawn(chapter.move(shift, 4.0))
    assert moved_image != still_image and moved["rms"] > start["rms"]

    fewer_image, fewer = _redrawn(chapter.move(shots, 4))
    assert fewer_image != moved_image and fewer["shots"] == 4 and fewer["rms"] != moved["rms"]

    unchanged = chapter.move(shots, 4)  # the same value again: no event, nothing redrawn
    assert not unchanged.updates and not unchanged.errors
