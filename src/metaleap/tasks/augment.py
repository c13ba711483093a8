"""Batched random affine augmentation (docs/experiments.md): rotation, translation and scale.

One ``affine_grid``/``grid_sample`` call transforms the whole batch, each image with its own
transform; every random number comes from the ``torch.Generator`` passed in, so the same
generator state gives the same batch. Areas that come from outside the image are filled with
``fill`` (0 for ink-high images, whose background is 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def affine_matrices(angle: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """The ``(N, 2, 3)`` sampling matrices for ``F.affine_grid`` (output → input coordinates).

    ``angle`` (N,) in degrees, counter-clockwise as displayed (rows down, as ``torch.rot90``
    with ``dims=(-2, -1)``); ``scale`` (N,), >1 enlarges the content; ``shift`` (N, 2) as
    ``(dx, dy)`` fractions of the image width/height, positive = right/down. The image is
    rotated and scaled about its centre, then shifted.
    """
    a = torch.deg2rad(angle)
    cos, sin = torch.cos(a), torch.sin(a)
    # Forward map in normalised (x right, y down) coordinates: p' = s R p + 2 shift, where R is
    # counter-clockwise as displayed: R = [[cos, sin], [-sin, cos]]. Sample with its inverse.
    inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    inv = inv / scale[:, None, None]
    offset = -(inv @ (2.0 * shift)[..., None])
    return torch.cat([inv, offset], dim=-1)


def apply_affine(x: Tensor, theta: Tensor, fill: float = 0.0, mode: str = "bilinear") -> Tensor:
    """Warp each image of ``x`` (N, C, H, W) by its matrix in ``theta`` (N, 2, 3), in one call.

    Pixels sampled from outside the image take the value ``fill``.
    """
    # cast where theta is, then copy without waiting for the device (no host sync per batch)
    theta = theta.to(dtype=x.dtype).to(x.device, non_blocking=True)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if fill == 0.0:
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    # grid_sample pads with zeros; shifting by ``fill`` makes the padding equal ``fill``.
    out = F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out + fill


class RandomAffine:
    """Random rotation, translation and scale, each image its own draw (defaults:
    docs/experiments.md).

    ``rotation``: range of angles in degrees; ``translate``: maximum shift as a fraction of the
    image size (a number for both axes or ``(max_dx, max_dy)``); ``scale``: range of zoom
    factors; ``fill``: value of pixels that come from outside the image. Call it as
    ``aug(x, generator)`` with ``x`` of shape (N, C, H, W); it fits ``base.batches(augment=)``.
    """

    def __init__(self, rotation: tuple[float, float] = (0.0, 360.0),
                 translate: float | tuple[float, float] = 0.2,
                 scale: tuple[float, float] = (0.8, 1.2), fill: float = 0.0,
                 mode: str = "bilinear") -> None:
        tx, ty = (translate, translate) if isinstance(translate, (int, float)) else translate
        if tx < 0 or ty < 0:
            raise ValueError(f"translate must be >= 0, got {translate}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be a range (lo, hi) with 0 < lo <= hi, got {scale}")
        if rotation[0] > rotation[1]:
            raise ValueError(f"rotation must be a range (lo, hi) with lo <= hi, got {rotation}")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.rotation = (float(rotation[0]), float(rotation[1]))
        self.translate = (float(tx), float(ty))
        self.scale = (float(scale[0]), float(scale[1]))
        self.fill = float(fill)
        self.mode = mode

    def __repr__(self) -> str:
        return (f"RandomAffine(rotation={self.rotation}, translate={self.translate}, "
                f"scale={self.scale}, fill={self.fill}, mode={self.mode!r})")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` random sampling matrices (N, 2, 3), float64, on the generator's device.

        Always draws exactly ``4 n`` uniforms (angle, scale, dx, dy per image) from
        ``generator``, whatever the ranges, so streams stay aligned across settings.
        """
        u = torch.rand(n, 4, generator=generator, device=generator.device, dtype=torch.float64)
        lo, hi = self.rotation
        angle = lo + (hi - lo) * u[:, 0]
        # Scale uniform in log space would also be reasonable; uniform matches torchvision.
        s_lo, s_hi = self.scale
        scale = s_lo + (s_hi - s_lo) * u[:, 1]
        limits = torch.tensor(self.translate, dtype=torch.float64, device=u.device)
        shift = (2.0 * u[:, 2:] - 1.0) * limits
        return affine_matrices(angle, scale, shift)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment the batch ``x`` (N, C, H, W); shape and dtype are kept."""
        if x.dim() != 4:
            raise ValueError(f"expected a batch of shape (N, C, H, W), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return x
        theta = self.sample(x.shape[0], generator)
        return apply_affine(x, theta, fill=self.fill, mode=self.mode)


__all__ = ["RandomAffine", "affine_matrices", "apply_affine"]
