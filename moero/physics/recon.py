"""Classical reconstruction of eq. (1): CG-SENSE, conjugate gradients on the normal equations
``(A^H A + lam I) x = A^H y`` (Pruessmann et al.), the reference the learned models are compared with."""

from __future__ import annotations

import torch

from moero.physics.sense import sense_adjoint, sense_normal

__all__ = ["cg_sense"]


# --------------------------------------------------------------------------------------------- CG-SENSE
def cg_sense(
    kspace: torch.Tensor,
    maps: torch.Tensor,
    mask: torch.Tensor | None = None,
    iters: int = 10,
    lam: float = 0.0,
) -> torch.Tensor:
    """CG-SENSE: conjugate gradients on ``(A^H A + lam I) x = A^H y`` from ``x = 0`` (eq. (1), Tikhonov ``lam``).

    Batched over leading axes (each image has its own step sizes). Returns the complex image ``(..., H, W)``.
    """
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    rhs = sense_adjoint(kspace, maps, mask)
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rs = (residual.abs() ** 2).sum(dim=(-2, -1), keepdim=True)
    for _ in range(iters):
        a_dir = sense_normal(direction, maps, mask)
        if lam:
            a_dir = a_dir + lam * direction
        curvature = torch.real((direction.conj() * a_dir).sum(dim=(-2, -1), keepdim=True))
        # converged images (zero direction) keep a zero step instead of 0/0
        alpha = torch.where(curvature > 0, rs / curvature.clamp_min(torch.finfo(curvature.dtype).tiny), 0.0)
        x = x + alpha * direction
        residual = residual - alpha * a_dir
        rs_new = (residual.abs() ** 2).sum(dim=(-2, -1), keepdim=True)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), 0.0)
        direction = residual + beta * direction
        rs = rs_new
    return x
