"""Architecture figures drawn from a model's own configuration (matplotlib boxes and arrows).

* :func:`promptmr_diagram`: PromptMR+ -- the sensitivity net, the unrolled cascades of eq. (2) (data
  consistency plus the prompt U-Net denoiser) and the final RSS;
* :func:`vq_prompt_diagram`: the prompt U-Net with the VQ-Prompt block at its bottleneck (quantise, decode,
  fuse) and the token histogram of eq. (8);
* :func:`moero_diagram`: the Moero grid of cascades x experts, one BranchNav per cascade, and the routed
  path of one example (the experts it visited highlighted).

Every number printed in a figure (cascades, widths, codebook sizes, experts) is read from the configuration
passed in, so the drawing follows the preset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moero.models.promptmr import ModelConfig

__all__ = ["promptmr_diagram", "vq_prompt_diagram", "moero_diagram"]

_BOX = {"sens": "#d8e8f5", "dc": "#f6e3c8", "net": "#dcefd9", "vq": "#eadcf3", "nav": "#f7d9d9", "io": "#eeeeee"}


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, colour: str, bold: bool = False,
         edge: str = "#444444", lw: float = 1.0, fontsize: float = 10) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=colour,
                                edgecolor=edge, linewidth=lw))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize,
            fontweight="bold" if bold else "normal")


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float], colour: str = "#444444", lw: float = 1.2,
           style: str = "-|>") -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=colour, linewidth=lw,
                                 shrinkA=0, shrinkB=0))


def _canvas(width: float, height: float, size: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def promptmr_diagram(config: ModelConfig, shown_cascades: int = 3) -> Any:
    """PromptMR+ unrolled: sensitivity net on the ACS, ``config.num_cascades`` cascades of data consistency and
    prompt U-Net (eq. (2); the first ``shown_cascades`` drawn, the rest elided), RSS of the centre frame."""
    n = int(config.num_cascades)
    drawn = min(n, shown_cascades)
    width = 3.2 + 2.6 * drawn + (1.0 if n > drawn else 0.0) + 1.6
    fig, ax = _canvas(width, 4.6, (min(11.0, width * 0.8), 3.9))
    _box(ax, 0.1, 1.5, 1.3, 1.2, "masked\nk-space y,\nmask M", _BOX["io"], fontsize=9)
    _box(ax, 0.3, 3.1, 2.3, 0.9, "sensitivity net\n(ACS -> maps S)", _BOX["sens"], fontsize=9)
    _arrow(ax, (0.75, 2.7), (0.75, 3.1))
    x = 1.8
    _arrow(ax, (1.4, 2.1), (x, 2.1))
    for k in range(drawn):
        _box(ax, x, 1.3, 2.2, 1.65, "", "white", edge="#888888")
        ax.text(x + 1.1, 2.75, f"cascade {k + 1} of {n}", ha="center", va="center", fontsize=9, style="italic")
        _box(ax, x + 0.1, 1.42, 0.95, 1.1, "data\nconsis-\ntency", _BOX["dc"], fontsize=8.5)
        _box(ax, x + 1.15, 1.42, 0.95, 1.1, "prompt\nU-Net", _BOX["net"], fontsize=8.5)
        _arrow(ax, (x + 1.1, 3.5), (x + 1.1, 2.95), colour="#5b86b0", lw=0.9)  # the maps S enter every cascade
        if k < drawn - 1 or n > drawn:
            _arrow(ax, (x + 2.2, 2.1), (x + 2.6, 2.1))
        x += 2.6
    ax.plot([2.6, x - 2.6 + 1.1], [3.5, 3.5], color="#5b86b0", lw=0.9)
    ax.text(2.7, 3.6, "maps S", fontsize=8.5, color="#5b86b0")
    if n > drawn:
        ax.text(x + 0.3, 2.1, "...", ha="center", va="center", fontsize=16)
        _arrow(ax, (x + 0.6, 2.1), (x + 1.0, 2.1))
        x += 1.0
    _box(ax, x, 1.5, 1.4, 1.2, f"RSS of\nframe {config.frames // 2 + 1}\nof {config.frames}", _BOX["io"], fontsize=9)
    u, s_ = config.unet, config.sens
    ax.text(width / 2, 0.75, "x_{k+1} = x_k - eta_k (A^H A x_k - A^H y) - D_k(...)   (eq. (2)),  A = M F S",
            ha="center", va="center", fontsize=9, family="monospace")
    ax.text(width / 2, 0.25, f"U-Net widths (channels): denoiser {u.stem}-{'-'.join(map(str, u.levels))}, "
            f"sensitivity net {s_.stem}-{'-'.join(map(str, s_.levels))}", ha="center", va="center", fontsize=9)
    ax.set_title(f"PromptMR+ ({config.name}): {n} unrolled cascades, {config.frames} frames in, the centre frame out",
                 fontsize=11)
    return fig


def vq_prompt_diagram(config: ModelConfig) -> Any:
    """The prompt U-Net of one cascade with the VQ-Prompt block at its bottleneck: the bottleneck features are
    quantised to ``config.num_codes`` codes, decoded by ``config.vq_decoder_blocks`` blocks and fused back; the
    token histogram (eq. (8)) is what BranchNav routes on."""
    unet = config.unet
    fig, ax = _canvas(12.0, 5.0, (10.5, 4.4))
    widths = [unet.stem, *unet.levels]
    xs = [0.3, 1.8, 3.3, 4.8]
    for i, (x, c) in enumerate(zip(xs, widths, strict=True)):
        _box(ax, x, 3.4 - 0.55 * i, 1.2, 0.8, f"enc {i}\n{c} ch" if i else f"stem\n{c} ch", _BOX["net"], fontsize=8.5)
        if i:
            _arrow(ax, (xs[i - 1] + 1.2, 3.8 - 0.55 * (i - 1)), (x, 3.8 - 0.55 * i))
    bx, by = 6.4, 1.4
    _box(ax, bx, by, 3.2, 1.5, "", "white", edge="#7a4f9a", lw=1.5)
    ax.text(bx + 1.6, by + 1.3, "VQ-Prompt block (bottleneck)", ha="center", fontsize=9, color="#7a4f9a")
    _box(ax, bx + 0.1, by + 0.15, 0.9, 0.9, f"quantise\n{config.num_codes}\ncodes", _BOX["vq"], fontsize=8.5)
    _box(ax, bx + 1.15, by + 0.15, 0.9, 0.9, f"decode\n{config.vq_decoder_blocks}\nblocks", _BOX["vq"], fontsize=8.5)
    _box(ax, bx + 2.2, by + 0.15, 0.9, 0.9, "fuse\n(residual)", _BOX["vq"], fontsize=8.5)
    _arrow(ax, (bx + 1.0, by + 0.6), (bx + 1.15, by + 0.6))
    _arrow(ax, (bx + 2.05, by + 0.6), (bx + 2.2, by + 0.6))
    _arrow(ax, (xs[-1] + 1.2, 2.05), (bx, by + 0.6))
    _box(ax, 10.2, by + 0.1, 1.6, 1.0, "decoder\nwith prompts\n-> D_k(x)", _BOX["net"], fontsize=8.5)
    _arrow(ax, (bx + 3.2, by + 0.6), (10.2, by + 0.6))
    _box(ax, bx + 0.1, 0.05, 1.9, 0.8, "token histogram h\n(eq. (8)) -> BranchNav", _BOX["nav"], fontsize=8.5)
    _arrow(ax, (bx + 0.55, by + 0.15), (bx + 0.55, 0.85), colour="#a04040")
    ax.set_title(f"VQ-Prompt in the prompt U-Net ({config.name}): bottleneck quantised to {config.num_codes} codes",
                 fontsize=11)
    return fig


def moero_diagram(config: ModelConfig, num_experts: int, routes: Sequence[int] | None = None,
                  num_codes: tuple[int, int] | None = None, shown_cascades: int = 5) -> Any:
    """The Moero grid: ``config.num_cascades`` columns (cascades) x ``num_experts`` rows (experts), one BranchNav
    above each column routing on the previous histogram (the coil-map net's for cascade 1), and the path of one
    example: ``routes[k]`` is the expert it took in cascade k (highlighted; none drawn without ``routes``). More
    than ``shown_cascades`` cascades: the first ones and the last are drawn, the others elided."""
    n, k_exp = int(config.num_cascades), int(num_experts)
    if routes is not None and len(routes) != n:
        raise ValueError(f"routes must give one expert per cascade ({n}), got {len(routes)}")
    sens_codes, codes = num_codes or (config.sens_num_codes, config.num_codes)
    columns = list(range(n)) if n <= shown_cascades else [*range(shown_cascades - 1), n - 1]
    gap = 0.9 if len(columns) < n else 0.0
    width = 2.4 + 1.9 * len(columns) + gap + 1.4
    height = 2.3 + 0.85 * k_exp
    fig, ax = _canvas(width, height, (min(10.0, 0.66 * width), min(7.0, 0.66 * height + 0.6)))
    top = height - 1.25
    _box(ax, 0.1, top - 0.15, 1.9, 0.9, f"coil-map net\nVQ: {sens_codes} codes", _BOX["sens"], fontsize=9)
    prev, x = None, 2.4
    for i, c in enumerate(columns):
        if i and columns[i - 1] != c - 1:  # elided cascades
            ax.text(x + gap / 2 - 0.2, top - 0.9 - 0.85 * (k_exp - 1) / 2, "...", ha="center", fontsize=16)
            x += gap
        _box(ax, x, top, 1.5, 0.6, f"BranchNav {c + 1}\nK={k_exp}", _BOX["nav"], fontsize=8)
        _arrow(ax, (2.0 if i == 0 else x - 0.4 - (gap if columns[i - 1] != c - 1 else 0), top + 0.3),
               (x, top + 0.3), colour="#a04040", lw=0.9)
        for j in range(k_exp):
            y = top - 0.9 - 0.85 * j
            taken = routes is not None and int(routes[c]) == j
            _box(ax, x, y, 1.5, 0.65, f"cascade {c + 1}\nexpert {j + 1}", _BOX["net"] if taken else "#f4f4f4",
                 bold=taken, edge="#2f6b2a" if taken else "#aaaaaa", lw=2.0 if taken else 0.8, fontsize=9)
            if taken:
                if prev is not None:
                    _arrow(ax, prev, (x, y + 0.33), colour="#2f6b2a", lw=2.0)
                prev = (x + 1.5, y + 0.33)
        x += 1.9
    if prev is not None:
        _box(ax, width - 1.3, prev[1] - 0.35, 1.2, 0.7, "image", _BOX["io"], fontsize=9)
        _arrow(ax, prev, (width - 1.3, prev[1]), colour="#2f6b2a", lw=2.0)
    note = (f"Each BranchNav routes on the token histogram of the step before it (eq. (8));\nthe experts of a "
            f"cascade share one VQ-Prompt block ({codes} codes).")
    ax.text(width / 2, 0.1, note, ha="center", fontsize=9, color="#444444")
    path = " -> ".join(f"{int(r) + 1}" for r in routes) if routes is not None else ""
    ax.set_title(f"Moero {n}x{k_exp}: one expert per cascade and example" + (f"\n(this example: experts {path})"
                                                                           if path else ""), fontsize=11)
    return fig
