"""A CMRxRecon2025-layout tree with the organisers' names, made from a synthetic tree (test helper).

``python tests/realtree.py SRC DST`` (or :func:`make_real_tree`) copies the ``FullSample`` files of a
synthetic tree to ``DST`` under the names the organisers' format files use: vendor folders such as
``UIH_30T_umr780`` and ``Siemens_30T_CIMA.X`` (none of them in the synthetic vendor table), other
centre numbers, and modalities the synthetic set lacks (``Flow2d``, ``T1rho``, ``Perfusion``, copies of
cine files). One centre is put in ``ValidationSet`` only, so the layout makes it fresh. No
``manifest.csv`` is written: the tree is indexed by its layout alone.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# synthetic vendor -> a name from the organisers' format files (never a synthetic vendor name)
REAL_VENDORS = {
    "Siemens_30T_Vida": "Siemens_30T_CIMA.X",
    "UIH_15T_umr670": "UIH_30T_umr780",
    "UIH_50T_umrjupiter": "UIH_50T_umrjupiter.X",
    "Siemens_15T_Sola": "Siemens_15T_Aera",
    "Siemens_15T_Avanti": "Siemens_15T_Avanto_fit",
    "UIH_30T_umr880": "UIH_30T_umr790",
    "GE_15T_Signa": "GE_15T_SIGNA.Artist",
    "GE_30T_Premier": "GE_30T_SIGNA.Premier",
}
# modalities the synthetic set lacks: (modality, file name) made from a copy of a cine file
EXTRA_MODALITIES = (("Flow2d", "flow2d"), ("T1rho", "T1rho"), ("Perfusion", "perfusion"))


def _centre(name: str) -> str:
    return f"Center{int(name[-3:]) + 10:03d}" if name[-3:].isdigit() else name + "X"


def make_real_tree(src: str | Path, dst: str | Path) -> Path:
    """Copy the fully sampled files of ``src`` to ``dst`` under real names (module docstring)."""
    src, dst = Path(src), Path(dst)
    files = sorted(p for p in src.rglob("*.mat") if "FullSample" in p.parts)
    if not files:
        raise ValueError(f"{src}: no FullSample file")
    centres = sorted({p.parts[-4] for p in files})
    validation_only = centres[-1]  # a centre seen only in ValidationSet: fresh by the layout rule
    extra_done: set[str] = set()
    for path in files:
        rel = path.relative_to(src).parts  # MultiCoil, modality, set, FullSample, centre, vendor, Pnnn, name
        modality, centre, vendor, subject, name = rel[1], rel[4], rel[5], rel[6], rel[7]
        set_name = "ValidationSet" if centre == validation_only else "TrainingSet"
        tail = (_centre(centre), REAL_VENDORS.get(vendor, vendor + "_X"), subject)
        target = dst.joinpath("MultiCoil", modality, set_name, "FullSample", *tail, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        if name == "cine_sax.mat" and set_name == "TrainingSet":
            for extra, stem in EXTRA_MODALITIES:  # two subjects per new modality
                key = f"{extra}:{centre}"
                if sum(k.startswith(extra + ":") for k in extra_done) >= 2 or key in extra_done:
                    continue
                extra_done.add(key)
                copy = dst.joinpath("MultiCoil", extra, set_name, "FullSample", *tail, f"{stem}.mat")
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
    return dst


if __name__ == "__main__":
    print(make_real_tree(sys.argv[1], sys.argv[2]))
