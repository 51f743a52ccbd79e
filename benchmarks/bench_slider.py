"""Chapter 02's live sliders: seconds from a browser's widget update to the redrawn figure (goal: < 1 s).

The chapter runs in a real kernel on the smoke profile (nbclient; synthetic cine slice, no gre.dat);
each move is the comm message a front end sends when a slider is dragged. A move is timed from sending
it to the kernel going idle, after the figure and readout have been replaced in place. Moves alternate
between two values of each slider so that every one redraws. Absolute seconds, not a ratio: they mean
little on a busy machine, hence the load average beside them. At the smoke size one move per slider.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from moero.book.live import LiveNotebook
from moero.data.synthetic import ensure_synthetic

TITLE = "Chapter 02 live sliders: seconds per widget update (smoke profile, real kernel)"

ROOT = Path(__file__).resolve().parents[1]
MOVES = {  # (model, description): the two values a move alternates between
    ("FloatSliderModel", "sigma"): (0.3, 0.1),
    ("FloatSliderModel", "range (px)"): (4.0, 2.0),
    ("IntSliderModel", "shots"): (4, 8),
}


def run(smoke: bool = False, repeat: int = 5) -> list[dict[str, Any]]:
    repeat = 1 if smoke else repeat
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_synthetic(Path(tmp) / "smoke", size="smoke", seed=0, progress=False)
        params = {"profile": "smoke", "data_root": str(root), "results_dir": str(Path(tmp) / "results"),
                  "params": {"gre": False}}
        rows = []
        with LiveNotebook(ROOT / "notebooks" / "02_kspace_augmentation.py", params, cwd=ROOT, timeout=120) as nb:
            for (model, description), values in MOVES.items():
                model_id = nb.find(model, description)
                times = []
                for i in range(max(1, 2 * repeat - int(smoke))):
                    update = nb.move(model_id, values[i % 2])
                    if update.errors or len(update.by_mime("image/png")) != 1:
                        raise RuntimeError(f"{description}: the move did not redraw the figure ({update.errors})")
                    times.append(update.seconds)
                rows.append({"slider": description, "moves": len(times), "median_s": statistics.median(times),
                             "max_s": max(times), "under_1s": max(times) < 1.0,
                             "load_avg_1min": os.getloadavg()[0]})  # wall time means little on a busy machine
        return rows
