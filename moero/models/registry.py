"""One model registry with the paper's names, used by the CLI, the trainer, the book and the benchmarks.

Names
-----
* ``promptmr``: the PromptMR+ baseline.
* ``vq-prompt``: PromptMR+ with the VQ-Prompt bottleneck.
* ``moero-<C>x<K>``: Moero, a grid of ``C`` cascades x ``K`` experts routed by BranchNav,
  e.g. ``moero-12x2`` and ``moero-12x4`` of the paper.

Sizes come from a preset, ``tiny``, ``small``, ``medium`` or ``paper`` (``moero.models.promptmr.PRESETS``);
a ``moero-CxK`` name fixes the cascade count, the preset everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from moero.models.moero import Moero
from moero.models.promptmr import PRESETS, ModelConfig, PromptMR, preset

__all__ = ["ModelSpec", "MODEL_NAMES", "PRESET_NAMES", "parse_model_name", "model_config", "build_model"]

MODEL_NAMES = ("promptmr", "vq-prompt", "moero-<C>x<K>")
PRESET_NAMES = tuple(PRESETS)
_MOERO = re.compile(r"moero-(\d+)x(\d+)")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed registry name: ``family`` (``promptmr``, ``vq-prompt``, ``moero``), cascades (None: the
    preset's) and experts per cascade (1 outside Moero)."""

    name: str
    family: str
    cascades: int | None = None
    num_experts: int = 1

    @property
    def uses_vq(self) -> bool:
        return self.family != "promptmr"


def parse_model_name(name: str) -> ModelSpec:
    """``ModelSpec`` of a registry name; a ``ValueError`` naming the accepted forms otherwise."""
    if name in ("promptmr", "vq-prompt"):
        return ModelSpec(name, name)
    match = _MOERO.fullmatch(name)
    if match:
        cascades, experts = int(match[1]), int(match[2])
        if cascades < 1 or experts < 1:
            raise ValueError(f"model {name!r}: cascades and experts must be >= 1")
        return ModelSpec(name, "moero", cascades, experts)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)} (e.g. moero-12x2)")


def model_config(name: str, size: str = "small", **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` the registry builds for ``name`` at preset ``size`` (``overrides`` win)."""
    spec = parse_model_name(name)
    if size not in PRESETS:
        raise ValueError(f"unknown model preset {size!r}; choose one of {', '.join(PRESET_NAMES)}")
    fields: dict[str, Any] = {"vq_prompt": spec.uses_vq}
    if spec.cascades is not None:
        fields["num_cascades"] = spec.cascades
    return preset(size, **{**fields, **overrides})


def build_model(name: str, size: str = "small", *, nav_kwargs: dict[str, Any] | None = None,
                sparse_sync: bool = True, **overrides: Any) -> nn.Module:
    """The network ``name`` (``promptmr``, ``vq-prompt``, ``moero-CxK``) at preset ``size``.

    ``overrides`` replace :class:`ModelConfig` fields (``checkpoint``, ``frames``, ...); ``nav_kwargs`` go to
    every BranchNav of a Moero model, and ``sparse_sync=False`` leaves its experts to DDP
    (``find_unused_parameters``, the authors' way).
    """
    spec = parse_model_name(name)
    config = model_config(name, size, **overrides)
    if spec.family == "moero":
        return Moero(config, spec.num_experts, nav_kwargs=nav_kwargs, sparse_sync=sparse_sync)
    if nav_kwargs:
        raise ValueError(f"model {name!r}: nav settings apply to Moero models only")
    return PromptMR(config)
