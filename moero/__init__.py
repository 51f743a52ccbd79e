"""moero: reproducible companion to *Branch Learning in MRI: More Data, More Models, More Training*.

The package is layered like the book; each layer imports only the ones before it:
``physics`` (FFT, SENSE operators, coil maps, masks, CG-SENSE) -> ``data`` (readers, synthetic data,
datasets, sampler) -> ``augment`` (DualSpace-CMR) -> ``models`` (PromptMR+, VQ-Prompt, Moero, the
registry) -> ``eval`` (metrics, official protocol) -> ``train`` (trainer, checkpoints, DDP) -> ``book``
(profiles, runner, experiments) -> ``cli``. The names below are the public API a notebook uses.

Conventions (stated once, used everywhere)
------------------------------------------
* Complex data are ``torch.complex64`` tensors (never a trailing real/imag axis), except where a
  network needs real channels; there ``moero.models`` converts explicitly.
* Axis order: ``(..., C, H, W)`` for multi-coil k-space and coil maps, ``(..., H, W)`` for images.
  The coil axis sits right before the two spatial axes.
* ``H`` is the readout direction (fully sampled, 2x oversampled in CMRxRecon files); ``W`` is the
  phase-encode direction, the one that masks undersample. A mask broadcasts as ``(..., 1, H, W)``
  or ``(..., W)`` against k-space.
* Volumes read from files follow ``(T, Z, C, H, W)``: frames, slices, coils, readout, phase encode.
* The Fourier transform is centred and orthonormal (``ifftshift -> fft2 -> fftshift``,
  ``norm="ortho"``) over the last two axes: reference equation (1), ``y = M F S x + n``.
* Every random operation takes a ``seed`` or a ``torch.Generator``; the same seed gives the same
  bytes.
"""

from __future__ import annotations

__version__ = "0.1.0"

from moero import augment, data, eval, models, physics, train
from moero.augment.pipeline import DualSpaceAugment, preview_artefacts
from moero.data.dataset import SliceDataset
from moero.data.readers import load_cmrxrecon, load_fastmri, read_manifest
from moero.data.sampler import BalancedSampler
from moero.data.synthetic import ensure_synthetic
from moero.eval.metrics import cmrxrecon_score, nmse, psnr, ssim
from moero.models.moero import Moero
from moero.models.promptmr import PromptMR, preset
from moero.models.registry import build_model, parse_model_name
from moero.physics.coils import espirit_maps, estimate_maps_lowres
from moero.physics.fft import fft2c, ifft2c
from moero.physics.masks import MaskSampler, make_mask
from moero.physics.recon import cg_sense
from moero.physics.sense import SenseOperator, rss, sense_adjoint, sense_forward, zero_filled
from moero.train.config import TrainConfig
from moero.train.runs import evaluate_checkpoint, load_trained
from moero.train.trainer import Trainer

__all__ = [
    "__version__",
    "physics", "data", "augment", "models", "eval", "train",
    "fft2c", "ifft2c", "SenseOperator", "sense_forward", "sense_adjoint", "rss", "zero_filled",
    "estimate_maps_lowres", "espirit_maps", "cg_sense", "make_mask", "MaskSampler",
    "load_cmrxrecon", "load_fastmri", "read_manifest", "ensure_synthetic", "SliceDataset", "BalancedSampler",
    "DualSpaceAugment", "preview_artefacts",
    "preset", "PromptMR", "Moero", "build_model", "parse_model_name",
    "ssim", "psnr", "nmse", "cmrxrecon_score",
    "TrainConfig", "Trainer", "load_trained", "evaluate_checkpoint",
]
