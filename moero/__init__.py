"""moero: reproducible companion to *Branch Learning in MRI: More Data, More Models, More Training*.

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
