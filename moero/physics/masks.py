"""CMRxRecon2025 sampling masks: Uniform, kt-Gaussian and kt-Radial.

Every mask is a boolean tensor ``(T, H, W)``: frames, readout, phase encode. Line masks (``uniform``,
``kt_gaussian``) sample whole phase-encode columns, so every row of a frame is the same; ``kt_radial``
samples 2-D spokes through the k-space centre.

Official construction (``exact=False``): the nominal acceleration ``R`` sets the number of lines
(``round(W / R)`` for kt-Gaussian, every ``R``-th line for Uniform) or spokes
(``floor(180 / (0.6 R))``) and the calibration region (ACS: ``acs`` central columns, or an
``acs x acs`` square for radial) comes on top, as in the challenge's files; the sampled fraction is
then larger than ``1/R``.

``exact=True`` counts the ACS in, so that every frame samples ``1/R`` of k-space (what most other
libraries call acceleration): line masks place ``round(W / R) - acs`` further lines outside the ACS;
radial masks pick the smallest spoke count whose union with the ACS reaches ``H W / R`` points and
then cut that frame's spokes at the radius that hits the budget. The ACS takes at most half of the
budget (it shrinks on small matrices or at high ``R``; :func:`effective_acs` says to what), so at
least half of the samples stay outside the centre.

ACS width: the challenge uses 20 lines on its about 246-line phase-encode matrices (about 8 % of W).
:func:`acs_width` scales that width with the phase-encode size, so that a smaller matrix of the same
field of view keeps the same calibrated fraction of k-space; :class:`MaskSampler` takes its ``acs``
as the width at the challenge's 246 lines. :func:`effective_acceleration` is the realised ``R_eff``
(``H W`` over the sampled points of a frame, ACS included).

Generation is vectorised over frames, lines and spokes; the only loops run over a handful of
bisection or collision-resolution rounds.
"""

from __future__ import annotations

import math
import numbers

import torch

from moero.physics.fastmri_masks import FASTMRI_KINDS, fastmri_mask, low_frequencies
from moero.physics.fft import centred_slice, ifft2c

__all__ = [
    "KINDS",
    "ACCELERATIONS",
    "GOLDEN_ANGLE_DEG",
    "ACS_LINES",
    "ACS_REFERENCE_PE",
    "acs_width",
    "matched_spokes",
    "make_mask",
    "effective_acs",
    "effective_acceleration",
    "point_spread",
    "MaskSampler",
]

KINDS = ("uniform", "kt_gaussian", "kt_radial")
ACCELERATIONS = (4, 8, 10, 12, 16, 20, 24)
GOLDEN_ANGLE_DEG = 137.5
_GAUSS_ALPHA = 0.2  # official kt-Gaussian constants (the challenge's mask code)
_GAUSS_SIGMA_FRACTION = 0.2  # s = ny / 5
_RADIAL_RATE = 0.6  # effective radial rate 0.6 R
ACS_LINES = 20  # the challenge's ACS width ...
ACS_REFERENCE_PE = 246  # ... on its typical phase-encode matrix (cine 512 x 246): about 8 % of W


def acs_width(phase_encode: int, acs: int = ACS_LINES) -> int:
    """ACS width for a phase-encode size: ``acs`` lines at the challenge's 246, scaled in proportion.

    ``round(acs * W / 246)``, at least 2 lines (a calibration block needs a centre pair) when
    ``acs > 0``, at most ``W``; 0 stays 0 (no ACS).
    """
    if not isinstance(phase_encode, int) or phase_encode < 1:
        raise ValueError(f"phase_encode must be a positive integer, got {phase_encode!r}")
    if not isinstance(acs, int) or acs < 0:
        raise ValueError(f"acs must be a non-negative integer, got {acs!r}")
    if acs == 0:
        return 0
    return min(max(round(acs * phase_encode / ACS_REFERENCE_PE), 2), phase_encode)


def effective_acceleration(mask: torch.Tensor) -> torch.Tensor:
    """Realised acceleration ``R_eff = H W / |mask|`` of each frame of a ``(..., H, W)`` mask (ACS included)."""
    if not torch.is_tensor(mask) or mask.ndim < 2:
        raise ValueError("mask must be a tensor (..., H, W)")
    h, w = mask.shape[-2:]
    count = (mask != 0).sum(dim=(-2, -1)).to(torch.float64)
    return (h * w) / count.clamp_min(1)


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:  # follow torch's global RNG, so torch.manual_seed still makes runs repeatable
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an int, a torch.Generator or None, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


def _check(kind: str, shape: tuple[int, int, int], acceleration: float, acs: int) -> tuple[int, int, int]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape must be three positive integers (T, H, W), got {shape!r}")
    if not isinstance(acceleration, int | float) or not math.isfinite(acceleration) or acceleration < 1:
        raise ValueError(f"acceleration must be a number >= 1, got {acceleration!r}")
    if not isinstance(acs, int) or acs < 0:
        raise ValueError(f"acs must be a non-negative integer, got {acs!r}")
    t, h, w = (int(s) for s in shape)
    limit = min(h, w) if kind == "kt_radial" else w
    if acs > limit:
        axis = "min(H, W)" if kind == "kt_radial" else "W (phase encode)"
        raise ValueError(f"acs={acs} is wider than the matrix: {axis} = {limit} for shape {tuple(shape)}")
    return t, h, w


def effective_acs(
    kind: str, shape: tuple[int, int, int], acceleration: float, acs: int = 20, exact: bool = False
) -> int:
    """The ACS width that :func:`make_mask` uses: ``acs``, or with ``exact=True`` at most half the budget."""
    _, h, w = _check(kind, shape, acceleration, acs)
    if not exact:
        return acs
    # at most half the budget goes to the ACS, so at least half the samples stay outside the centre
    if kind == "kt_radial":
        return min(acs, math.isqrt(_budget(h * w, acceleration) // 2))
    return min(acs, _budget(w, acceleration) // 2)


def _budget(n: int, acceleration: float) -> int:
    """Samples for a fraction ``1/R`` of ``n``: ``round(n / R)``, at least one."""
    return max(round(n / acceleration), 1)


def _centre_slice(n: int, width: int) -> slice:
    return centred_slice(n, width)


def _acs_columns(w: int, acs: int) -> torch.Tensor:
    cols = torch.zeros(w, dtype=torch.bool)
    cols[_centre_slice(w, acs)] = True
    return cols


def _lines_to_mask(cols: torch.Tensor, h: int) -> torch.Tensor:
    """``(T, W)`` sampled columns -> ``(T, H, W)`` mask (every row of a frame the same)."""
    return cols[:, None, :].expand(cols.shape[0], h, cols.shape[1]).contiguous()


# ---------------------------------------------------------------------------------------------- uniform
def _uniform(t: int, h: int, w: int, r: float, acs: int, exact: bool) -> torch.Tensor:
    acs_cols = _acs_columns(w, acs)
    if exact:
        budget = _budget(w, r)
        free = torch.nonzero(~acs_cols).flatten()
        extra = max(budget - acs, 0)
        # equispaced over the free columns, centred in each interval of width nfree / extra
        pick = ((torch.arange(extra, dtype=torch.float64) + 0.5) * (free.numel() / max(extra, 1))).long()
        cols = acs_cols.clone()
        cols[free[pick.clamp(max=free.numel() - 1)]] = True
    else:
        # every R-th line from line 0, as the official UniformSampling.m's mask(:, 1:R:end)
        k = torch.arange(0, w + 1, dtype=torch.float64)
        pos = torch.round(k * r).long()
        pos = pos[pos < w]
        cols = acs_cols.clone()
        cols[pos] = True
    return _lines_to_mask(cols[None].expand(t, w), h)


# ------------------------------------------------------------------------------------------ kt-Gaussian
def _nearest_free(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each ``(T, W)`` position the index of the nearest free column on the left and on the right (-1/W if none)."""
    w = occupied.shape[-1]
    idx = torch.arange(w).expand_as(occupied)
    left = torch.where(~occupied, idx, torch.full_like(idx, -1)).cummax(dim=-1).values
    right_src = torch.where(~occupied, idx, torch.full_like(idx, w)).flip(-1)
    right = (-(-right_src).cummax(dim=-1).values).flip(-1)
    return left, right


def _resolve_duplicates(draws: torch.Tensor, occupied: torch.Tensor) -> torch.Tensor:
    """Place the ``(T, n)`` drawn columns into ``occupied`` ``(T, W)``; a draw that hits an occupied
    column moves to the nearest free column of its frame (ties go towards the centre).

    Vectorised over frames and draws: each round places, per target column, the earliest draw that
    claims it; losers try again next round. Rounds <= the longest run of colliding draws.
    """
    occupied = occupied.clone()
    t, w = occupied.shape
    n = draws.shape[1]
    order = torch.arange(n).expand(t, n)
    pending = torch.ones_like(draws, dtype=torch.bool)
    frame = torch.arange(t)[:, None].expand(t, n)
    centre = w // 2
    while bool(pending.any()):
        left, right = _nearest_free(occupied)
        here = draws
        at_free = ~occupied.gather(1, here)
        l_pos, r_pos = left.gather(1, here), right.gather(1, here)
        dl = torch.where(l_pos >= 0, here - l_pos, torch.full_like(here, 10 * w))
        dr = torch.where(r_pos < w, r_pos - here, torch.full_like(here, 10 * w))
        towards_centre_right = here < centre
        go_right = (dr < dl) | ((dr == dl) & towards_centre_right)
        target = torch.where(at_free, here, torch.where(go_right, r_pos, l_pos))
        if bool((target[pending] < 0).any() | (target[pending] >= w).any()):
            raise ValueError("acceleration too low: more lines requested than the frame has free columns")
        # the earliest pending draw per (frame, target) wins the column this round
        key = torch.where(pending, frame * w + target, torch.full_like(target, t * w))
        first = torch.full((t * w + 1,), n, dtype=torch.long)
        first.scatter_reduce_(0, key.flatten(), order.flatten(), reduce="amin")
        wins = pending & (first[key] == order)
        occupied.view(-1)[(frame * w + target)[wins]] = True
        pending = pending & ~wins
    return occupied


def _kt_gaussian(t: int, h: int, w: int, r: float, acs: int, exact: bool, gen: torch.Generator) -> torch.Tensor:
    acs_cols = _acs_columns(w, acs)
    p = torch.arange(w, dtype=torch.float64) - w // 2
    a, s = _GAUSS_ALPHA, _GAUSS_SIGMA_FRACTION * w
    prob = 0.1 + a / (1 - a) * torch.exp(-(p**2) / s**2)
    budget = _budget(w, r)
    if exact:
        n = max(budget - acs, 0)
        prob = prob.masked_fill(acs_cols, 0.0)  # ACS counted in: draw only outside it
        occupied = acs_cols[None].expand(t, w)
    else:
        n = budget
        occupied = torch.zeros(t, w, dtype=torch.bool)
    if n == 0:
        cols = occupied
    else:
        draws = torch.multinomial(prob.expand(t, w), n, replacement=True, generator=gen)
        cols = _resolve_duplicates(draws, occupied)
    return _lines_to_mask(cols | acs_cols, h)


# -------------------------------------------------------------------------------------------- kt-Radial
def _spoke_points(t: int, h: int, w: int, num_spokes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterised spokes: (frame index, flat pixel index, radius) of every point.

    Spoke ``k`` of frame ``f`` has angle ``k 180/N + f 137.5`` degrees. As the official generator's
    nearest-neighbour rotation of a one-pixel row does, a spoke holds every pixel whose centre lies
    within half a pixel of the line through the k-space centre (one or two pixels per step along the
    major axis), out to the radius ``max(H, W) / 2`` (the official ``cropcorner``: the corners
    beyond it are never sampled), cut to the image. The official angle list includes its endpoint
    (``theta : 180/N : 180 + theta``), whose row sits half a pixel off the centre on the other side:
    the first spoke is therefore doubled to two pixels' width (``|d| < 1``).
    """
    theta = torch.deg2rad(
        torch.arange(num_spokes, dtype=torch.float64)[None] * (180.0 / num_spokes)
        + torch.arange(t, dtype=torch.float64)[:, None] * GOLDEN_ANGLE_DEG
    )  # (T, N)
    dr, dc = torch.sin(theta), torch.cos(theta)
    horizontal = dc.abs() >= dr.abs()  # major axis = columns
    span = max(h, w)
    u = torch.arange(-span, span + 1, dtype=torch.float64)  # (P,)
    slope = torch.where(horizontal, dr / torch.where(horizontal, dc, 1.0), dc / torch.where(horizontal, 1.0, dr))
    exact_minor = u[None, None] * slope[..., None]  # (T, N, P)
    # candidates round(.) - 2 ... round(.) + 2; keep those within half a pixel (first spoke: one) of the line
    minor = torch.round(exact_minor)[..., None] + torch.arange(-2.0, 3.0, dtype=torch.float64)
    width = torch.full((num_spokes,), 0.5, dtype=torch.float64)
    width[0] = 1.0
    half_width = (width[None] * torch.sqrt(1 + slope**2))[..., None, None]
    near = (minor - exact_minor[..., None]).abs() < half_width
    major = u[:, None].expand_as(minor)
    hor = horizontal[..., None, None]
    rows = torch.where(hor, minor, major) + h // 2
    cols = torch.where(hor, major, minor) + w // 2
    radius = torch.sqrt((rows - h // 2) ** 2 + (cols - w // 2) ** 2)
    inside = near & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w) & (radius <= span / 2)
    frame = torch.arange(t)[:, None, None, None].expand_as(rows)
    flat = (rows * w + cols).long()
    return frame[inside], flat[inside], radius[inside]


def _radial_from_points(t: int, h: int, w: int, frame, flat, radius, max_radius, acs_square) -> torch.Tensor:
    mask = torch.zeros(t, h * w, dtype=torch.bool)
    keep = radius <= max_radius[frame] if max_radius is not None else slice(None)
    mask[frame[keep], flat[keep]] = True
    return mask.view(t, h, w) | acs_square


def _mean_spoke_length(h: int, w: int) -> float:
    """Mean length (pixels) over angles of a spoke through the centre, cut to the image and to radius max(H, W)/2."""
    theta = torch.linspace(0, math.pi, 721, dtype=torch.float64)[:-1]
    s, c = torch.sin(theta).abs().clamp_min(1e-9), torch.cos(theta).abs().clamp_min(1e-9)
    half = torch.minimum(torch.minimum(h / 2 / s, w / 2 / c), torch.tensor(max(h, w) / 2, dtype=torch.float64))
    return float(2 * half.mean())


def matched_spokes(acceleration: float, h: int, w: int, reference: tuple[int, int] = (512, 246)) -> int:
    """Spoke count that samples the same fraction of an ``H x W`` frame as the official count does at ``reference``.

    The official ``floor(180 / (0.6 R))`` spokes are set for the challenge's matrices; on a smaller
    matrix of the same field of view the same count would sample far more than ``1/R`` (at 64 x 31,
    R = 8 is realised as R_eff ~ 2). The count scales with the image area over the mean spoke length,
    and equals the official count at ``reference``.
    """
    official = max(math.floor(180.0 / (_RADIAL_RATE * float(acceleration))), 1)
    rh, rw = reference
    density = official * _mean_spoke_length(rh, rw) / (rh * rw)  # sampled fraction without overlaps
    return max(round(density * h * w / _mean_spoke_length(h, w)), 1)


def _kt_radial(t: int, h: int, w: int, r: float, acs: int, exact: bool, spokes: int | None = None) -> torch.Tensor:
    acs_square = torch.zeros(h, w, dtype=torch.bool)
    acs_square[_centre_slice(h, acs), _centre_slice(w, acs)] = True
    if not exact:
        num_spokes = spokes or max(math.floor(180.0 / (_RADIAL_RATE * r)), 1)
        return _radial_from_points(t, h, w, *_spoke_points(t, h, w, num_spokes), None, acs_square)

    budget = _budget(h * w, r)
    if budget >= h * w:
        return torch.ones(t, h, w, dtype=torch.bool)
    acs_count = int(acs_square.sum())

    def spokes(num: int) -> torch.Tensor:
        return _radial_from_points(t, h, w, *_spoke_points(t, h, w, num), None, acs_square)

    # smallest spoke count whose full-length spokes reach the budget in every frame: start from the
    # official count, double until reached, then bisect (counts grow with the spoke count)
    lo = 0
    hi = max(math.floor(180.0 / (_RADIAL_RATE * r)), 1)
    while not bool((spokes(hi).sum(dim=(1, 2)) >= budget).all()) and hi < 4 * max(h, w):
        lo, hi = hi, min(2 * hi, 4 * max(h, w))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if bool((spokes(mid).sum(dim=(1, 2)) >= budget).all()):
            hi = mid
        else:
            lo = mid
    full = spokes(hi).view(t, h * w)
    # then cut each frame's spokes at the radius of its (budget - ACS)-th nearest spoke pixel outside
    # the ACS: a pixel's radius is its distance from the centre, so the cut keeps the inner part
    rows = torch.arange(h, dtype=torch.float64)[:, None] - h // 2
    cols = torch.arange(w, dtype=torch.float64)[None, :] - w // 2
    radius = torch.sqrt(rows**2 + cols**2).flatten()
    outside = full & ~acs_square.flatten()
    radii = torch.where(outside, radius, torch.full_like(radius, math.inf))
    extra = budget - acs_count
    if extra <= 0:
        return acs_square.expand(t, h, w).clone()
    cut = radii.kthvalue(min(extra, h * w), dim=1).values  # (T,)
    keep = outside & (radii <= cut[:, None])
    return (keep.view(t, h, w) | acs_square).contiguous()


# ----------------------------------------------------------------------------------------------- public
def make_mask(
    kind: str,
    shape: tuple[int, int, int],
    acceleration: float,
    acs: int = 20,
    seed: int | torch.Generator | None = None,
    exact: bool = False,
    spokes: int | None = None,
) -> torch.Tensor:
    """A CMRxRecon2025 sampling mask, boolean ``(T, H, W)``.

    ``kind``: ``uniform`` | ``kt_gaussian`` | ``kt_radial`` (or fastMRI's ``fastmri_random`` |
    ``fastmri_equispaced``, :mod:`moero.physics.fastmri_masks`: centre fraction from R, ``acs`` unused);
    ``shape``: ``(T, H, W)``;
    ``acceleration``: nominal ``R >= 1``; ``acs``: calibration width (central columns, or the side
    of the central square for radial; 0 for none); ``seed``: int or generator (kt-Gaussian draws;
    the other kinds are deterministic); ``exact``: count the ACS in so each frame samples ``1/R``;
    ``spokes``: kt-radial spoke count instead of the official ``floor(180 / (0.6 R))`` (see
    :func:`matched_spokes`; ignored with ``exact``).
    """
    if kind in FASTMRI_KINDS:  # fastMRI's masks: the centre fraction follows R (moero.physics.fastmri_masks)
        return fastmri_mask(kind, tuple(shape), acceleration, seed)
    t, h, w = _check(kind, tuple(shape), acceleration, acs)
    if spokes is not None and (not isinstance(spokes, int) or spokes < 1):
        raise ValueError(f"spokes must be a positive integer or None, got {spokes!r}")
    acs = effective_acs(kind, (t, h, w), acceleration, acs, exact)
    r = float(acceleration)
    if kind == "uniform":
        return _uniform(t, h, w, r, acs, exact)
    if kind == "kt_gaussian":
        return _kt_gaussian(t, h, w, r, acs, exact, _generator(seed))
    return _kt_radial(t, h, w, r, acs, exact, spokes)


def point_spread(mask: torch.Tensor) -> torch.Tensor:
    """Point-spread function ``|F^-1 M|`` of masks ``(..., H, W)``, scaled so the central peak is 1.

    Zero-filling a sampled image convolves it with this PSF: side lobes away from the centre are
    the aliasing (coherent replicas for Uniform, noise-like for the kt kinds).
    """
    if not torch.is_tensor(mask) or mask.ndim < 2:
        raise ValueError("mask must be a tensor (..., H, W)")
    psf = ifft2c(mask.to(torch.complex64)).abs()
    h, w = mask.shape[-2:]
    peak = psf[..., h // 2, w // 2].clamp_min(torch.finfo(psf.dtype).tiny)
    return psf / peak[..., None, None]


class MaskSampler:
    """Draws ``(kind, acceleration)`` per training example from configurable sets, then a mask.

    ``sample(shape, seed)`` is deterministic in ``seed`` (the kind, the acceleration and the
    kt-Gaussian draws all come from one generator seeded by it) and records what it drew. ``acs`` is
    the ACS width at the challenge's 246 phase-encode lines; each mask uses :func:`acs_width` of its
    own ``W`` (recorded as ``info["acs"]``), so the calibrated fraction does not grow on small matrices;
    likewise kt-radial uses :func:`matched_spokes` (``info["spokes"]``: the official count at 512 x 246).
    """

    def __init__(
        self,
        kinds: tuple[str, ...] | list[str] = KINDS,
        accelerations: tuple[float, ...] | list[float] = ACCELERATIONS,
        acs: int = 20,
        exact: bool = False,
    ) -> None:
        self.kinds = tuple(kinds)
        self.accelerations = tuple(accelerations)
        if not self.kinds or any(k not in KINDS + FASTMRI_KINDS for k in self.kinds):
            raise ValueError(f"kinds must be a non-empty subset of {KINDS + FASTMRI_KINDS}, got {kinds!r}")
        if not self.accelerations or any(
            not isinstance(a, int | float) or not a >= 1 for a in self.accelerations
        ):
            raise ValueError(f"accelerations must be a non-empty set of numbers >= 1, got {accelerations!r}")
        if not isinstance(acs, int) or acs < 0:
            raise ValueError(f"acs must be a non-negative integer, got {acs!r}")
        self.acs = acs
        self.exact = bool(exact)

    def sample(self, shape: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, dict]:
        """``(mask (T, H, W) bool, {"kind", "acceleration", "acs"})`` for this ``seed``."""
        gen = _generator(int(seed))
        kind = self.kinds[int(torch.randint(len(self.kinds), (1,), generator=gen))]
        acceleration = self.accelerations[int(torch.randint(len(self.accelerations), (1,), generator=gen))]
        if kind in FASTMRI_KINDS:
            mask = fastmri_mask(kind, tuple(shape), acceleration, gen)
            return mask, {"kind": kind, "acceleration": acceleration,
                          "acs": low_frequencies(int(shape[-1]), acceleration)}
        limit = min(shape[-2], shape[-1]) if kind == "kt_radial" else shape[-1]
        acs = min(acs_width(int(shape[-1]), self.acs), limit)
        spokes = matched_spokes(acceleration, int(shape[-2]), int(shape[-1])) if kind == "kt_radial" else None
        mask = make_mask(kind, shape, acceleration, acs=acs, seed=gen, exact=self.exact, spokes=spokes)
        acs = effective_acs(kind, tuple(shape), acceleration, acs, self.exact)
        info = {"kind": kind, "acceleration": acceleration, "acs": acs}
        if spokes is not None:
            info["spokes"] = spokes
        return mask, info

    def __repr__(self) -> str:
        return (
            f"MaskSampler(kinds={self.kinds}, accelerations={self.accelerations}, acs={self.acs}, exact={self.exact})"
        )
