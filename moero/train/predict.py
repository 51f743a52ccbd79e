"""``python -m moero predict``: reconstruct the challenge's undersampled files and write a submission.

For every ``UnderSample_<task>`` file of a CMRxRecon2025 tree (found by the layout index,
:mod:`moero.data.layout`): read ``kus`` and its mask (the ``mask`` key of the same file, else the
matching ``Mask_<task>`` file), reconstruct the images the protocol scores (frames and slices of
:func:`moero.eval.submission.ranking_selection`, each from the window of adjacent frames the model
was trained on, as :class:`moero.data.dataset.SliceDataset` builds it), and write the official
``img4ranking`` file (:mod:`moero.eval.submission`) under
``<out>/<task>/MultiCoil/<Modality>/<Set>/UnderSample_<task>/<Center>/<Vendor>/<Pnnn>/``, then the one
``<out>/Submission.zip`` the rules ask for: every task written to ``--out`` (each task's recorded
files, entries ``<task>/MultiCoil/...``), so predicting TaskR1 and then TaskR2 into one folder leaves
a zip holding both.

Resumable, and never trusting what is already in ``--out``: ``<out>/.<task>.predict.json`` records the
model (SHA-256 of the checkpoint file, or of the weights), the input tree (its folder, and path, size
and time of every input file) and the SHA-256 of every file written. A resume with another model or input tree is
refused, a file is skipped only when it still has its recorded hash (a damaged or foreign one is
written again), a submission folder holding files without such a record is refused, and the zip holds
exactly the files of this model and tree. Each file is written to a temporary ``.part`` name, then
renamed; ``.part`` files of a killed run are removed. One ``predict`` per submission folder at a time
(a lock ``<out>/.<task>.lock`` names the holder). A bad input (unreadable, no mask, wrong shape, NaN)
is reported, skipped, and the other files are still written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from moero.data.dataset import adjacent_frames, is_cyclic
from moero.data.digest import file_sha256
from moero.data.layout import layout_index
from moero.data.readers import DataError, Volume, load_cmrxrecon
from moero.eval.submission import img4ranking, ranking_selection, save_img4ranking
from moero.models.io import model_inputs, output_parts
from moero.train.distributed import resolve_device
from moero.train.rundir import RunLock
from moero.train.runs import model_to_predict

__all__ = ["SUBMISSION_ZIP", "reconstruct_selection", "submission_path", "predict", "zip_folder", "zip_submission"]

SUBMISSION_ZIP = "Submission.zip"


@torch.no_grad()
def reconstruct_selection(model: nn.Module, volume: Volume, modality: str, frames: int, acs: int,
                          device: torch.device, cyclic: bool = False) -> torch.Tensor:
    """Magnitude images ``(frames kept, slices kept, H, W)`` of an undersampled volume, one model call
    per image on its window of ``frames`` adjacent frames (centre frame = the image's frame)."""
    if volume.mask is None:
        raise DataError(volume.path, "mask", "undersampled file without a mask")
    t, z = volume.kspace.shape[:2]
    keep_t, keep_z = ranking_selection(t, z, modality)
    out = torch.empty(len(keep_t), len(keep_z), *volume.kspace.shape[-2:])
    for a, frame in enumerate(keep_t):
        window = adjacent_frames(frame, frames, t, cyclic)
        mask = volume.mask[window].to(device)
        for b, slc in enumerate(keep_z):
            kspace = volume.kspace[window, slc].to(device)  # (F, C, H, W), zeros where not sampled
            batch = {"masked_kspace": (kspace * mask[:, None]).unsqueeze(0), "mask": mask.unsqueeze(0),
                     "num_low_frequencies": torch.tensor([acs], device=device)}
            args, kwargs = model_inputs(batch, acs)
            image, _ = output_parts(model(*args, **kwargs))
            out[a, b] = image[0].float().cpu()
    return out


def submission_path(out: Path, task: str, rel: str) -> Path:
    """``<out>/<task>/MultiCoil/...`` of an input file ``rel`` (relative to the data root); a ``ValueError``
    when ``rel`` would lead outside that folder (an absolute path or ``..``)."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise ValueError(f"predict: input path {rel!r} is not a plain path inside the data root")
    start = parts.index("MultiCoil") if "MultiCoil" in parts else 0
    return out / task / Path(*parts[start:])


def _model_hash(model: nn.Module) -> str:
    """SHA-256 of a model's weights and buffers (names and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _inputs_id(data_root: Path, rows: Sequence[dict[str, Any]]) -> str:
    """Hash of the input tree: its folder and the files of ``rows`` (undersampled files and their masks:
    path, size, time)."""
    h = hashlib.sha256(f"{data_root.resolve()}\n".encode())
    for rel in sorted({r["file"] for r in rows} | {r["mask_file"] for r in rows if r["mask_file"]}):
        try:
            st = (data_root / rel).stat()
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{rel}:missing\n".encode())
    return h.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` to ``path`` atomically."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _claim(out: Path, task: str, record_path: Path, model_id: str, inputs_id: str) -> dict[str, str]:
    """Check the record of an earlier run (lock held) and clean its ``.part`` files; returns the recorded
    hashes of written files (empty for a fresh folder)."""
    folder = out / task
    parts = [*folder.rglob("*.part"), *out.glob(f"{task}.zip.*.part"), *out.glob(f"{SUBMISSION_ZIP}.*.part"),
             *out.glob(f".{task}.predict.json.*.part")]
    for part in parts:
        part.unlink(missing_ok=True)  # a killed run's temporaries: this command's own names, lock held
    if not record_path.is_file():
        if folder.exists() and any(p.is_file() for p in folder.rglob("*")):
            raise ValueError(f"predict: {folder} holds files that no recorded predict run wrote ({record_path} is "
                             f"missing); give another --out or remove them")
        return {}
    try:
        record = json.loads(record_path.read_text())
        files = dict(record["files"])
        same = record["model"] == model_id and record["inputs"] == inputs_id
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"predict: {record_path} is unreadable ({type(err).__name__}); give another --out") from None
    if not same:
        what = "model (checkpoint)" if record["model"] != model_id else "input tree"
        raise ValueError(f"predict: {folder} holds a submission of another {what}; resuming would mix them: "
                         f"give another --out")
    return {str(k): str(v) for k, v in files.items()}


def zip_folder(folder: Path, archive: Path, files: Iterable[Path] | None = None, base: Path | None = None) -> Path:
    """Zip ``files`` (default: every ``.mat`` file of ``folder``) to ``archive`` atomically; entries are
    relative to ``base`` (default: the folder's parent, so they start with the folder's name)."""
    base = folder.parent if base is None else base
    fd, tmp = tempfile.mkstemp(prefix=archive.name + ".", suffix=".part", dir=archive.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*.mat") if files is None else files):
                zf.write(path, path.relative_to(base).as_posix())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file's permissions, not mkstemp's 0600
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return archive


def zip_submission(out: Path) -> Path | None:
    """``<out>/Submission.zip`` of every task recorded in ``out`` (``.<task>.predict.json``: the files each
    task's predict wrote and verified), entries ``<task>/MultiCoil/...``; None when nothing is recorded."""
    files = []
    for record_path in sorted(out.glob(".*.predict.json")):
        task = record_path.name[1:-len(".predict.json")]
        try:
            recorded = json.loads(record_path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # another task's unreadable record: its predict refuses to resume, nothing to zip
        files += [out / task / rel for rel in sorted(recorded) if (out / task / rel).is_file()]
    return zip_folder(out, out / SUBMISSION_ZIP, files, base=out) if files else None


def predict(
    checkpoint: str | Path | None,
    data_root: str | Path,
    task: str,
    out: str | Path,
    device: str = "auto",
    progress: bool = True,
    model: nn.Module | None = None,
    frames: int | None = None,
    acs: int | None = None,
    make_zip: bool = True,
) -> dict[str, Any]:
    """Write the submission of ``task`` (module docstring). The model is the registry model of
    ``checkpoint`` (:func:`moero.train.runs.load_trained`), or ``model`` with ``frames`` and ``acs``.

    Returns ``{"written", "skipped" (already there, hash verified), "errors" ([file, message]), "zip"}``.
    """
    data_root, out = Path(data_root), Path(out)
    given = model is not None
    model, config, frames = model_to_predict(checkpoint, model, frames)
    if config is not None:
        acs = acs if acs is not None else int(config.acs)
    model_id = _model_hash(model) if given else file_sha256(Path(checkpoint))
    frames, acs = int(frames or 1), int(20 if acs is None else acs)
    rows = [r for r in layout_index(data_root) if r["kind"] == "kus" and r["task"] == task]
    if not rows:
        tasks = sorted({r["task"] for r in layout_index(data_root) if r["kind"] == "kus"})
        raise ValueError(f"predict: no UnderSample_{task} file under {data_root} (tasks found: {tasks})")
    targets = [submission_path(out, task, r["file"]) for r in rows]  # every path checked before any work
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out / task, what="submission folder", hint="give another --out"):
        record_path = out / f".{task}.predict.json"
        done = _claim(out, task, record_path, model_id, _inputs_id(data_root, rows))
        record = {"model": model_id, "inputs": _inputs_id(data_root, rows), "data_root": str(data_root.resolve()),
                  "files": dict(done)}
        _write_json(record_path, record)  # before any output: a killed run's files are known as ours
        dev = resolve_device(device)
        model = model.to(dev).eval()
        result = _predict_files(model, rows, targets, data_root, out / task, frames, acs, dev, done, record,
                                record_path, tqdm(rows, desc=f"predict {task}", disable=not progress, ncols=100))
        archive = zip_submission(out) if make_zip else None
    return {**result, "zip": str(archive) if archive else None}


def _predict_files(model: nn.Module, rows: Sequence[dict[str, Any]], targets: Sequence[Path], data_root: Path,
                   folder: Path, frames: int, acs: int, dev: torch.device, done: dict[str, str],
                   record: dict[str, Any], record_path: Path, bar: Any) -> dict[str, list]:
    """Write (or verify and skip) the file of each row; ``record["files"]`` gets the hash of each."""
    written, skipped, errors = [], [], []
    for row, target, _ in zip(rows, targets, bar, strict=True):
        rel = target.relative_to(folder).as_posix()
        if target.is_file() and rel in done and file_sha256(target) == done[rel]:
            skipped.append(str(target))
            continue
        if record["files"].pop(rel, None) is not None:  # damaged or missing: written again, or not zipped
            _write_json(record_path, record)
        try:
            mask_path = data_root / row["mask_file"] if row["mask_file"] else None
            volume = load_cmrxrecon(data_root / row["file"], mask_path)
            images = reconstruct_selection(model, volume, row["modality"], frames, acs, dev, is_cyclic(row))
        except (DataError, ValueError, OSError) as err:
            message = str(err) if str(data_root / row["file"]) in str(err) else f"{data_root / row['file']}: {err}"
            errors.append([row["file"], message])
            print(f"error: {message}", file=sys.stderr)
            continue
        save_img4ranking(target, img4ranking(images))
        record["files"][rel] = file_sha256(target)
        _write_json(record_path, record)
        written.append(str(target))
    return {"written": written, "skipped": skipped, "errors": errors}
