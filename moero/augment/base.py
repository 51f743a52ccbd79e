"""The transform protocol of the augmentation layer (torchio's pattern).

A :class:`RandomTransform` draws its parameters from a :class:`torch.Generator` and returns a
:class:`Transform`, a frozen record of those parameters that re-applies them deterministically (same
parameters, same bytes). The small helpers draw scalars from a generator reproducibly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

__all__ = ["check_probability", "bernoulli", "uniform", "draw_seed", "Transform", "RandomTransform"]


# ----------------------------------------------------------------------------------------- helpers
def check_probability(p: float, name: str = "p") -> float:
    """``p`` as a float in [0, 1]; a ``ValueError`` naming ``name`` otherwise."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def bernoulli(generator: torch.Generator, p: float) -> bool:
    return bool(torch.rand((), generator=generator, dtype=torch.float64).item() < p)


def uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64).item())


def draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (), generator=generator).item())


# ---------------------------------------------------------------------------- deterministic transforms
class Transform:
    """Shared interface: ``apply(*tensors)`` returns the transformed tensors; ``params()`` a flat dict."""

    name: ClassVar[str] = ""

    def apply(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} must define apply")

    def params(self) -> dict[str, Any]:
        return dict(vars(self))


# ------------------------------------------------------------------------------------- random transforms
class RandomTransform:
    """Shared interface: ``sample(generator, shape) -> transform | None`` and ``neutral_params()``."""

    p: float

    def sample(self, generator: torch.Generator, shape: tuple[int, int]) -> Transform | None:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} must define sample")

    def neutral_params(self) -> dict[str, Any]:
        """The parameters recorded when the transform is not drawn (the identity)."""
        return self._identity().params()

    def _identity(self) -> Transform:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} must define _identity")
