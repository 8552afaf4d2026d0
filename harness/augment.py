"""Label-preserving augmentation of a thief's training batches (image inputs only).

A queried image keeps the victim's answer for the original: a digit shifted by two pixels or
turned by ten degrees is still the same digit, so the thief learns the victim's answer over a
small neighbourhood of every query instead of at one point. Nothing here queries the victim.

Each sample of a batch gets its own random affine transform (rotation, scale, translation),
applied with ``torch.nn.functional.affine_grid`` / ``grid_sample`` in one call for the batch
(torchvision's ``RandomAffine`` draws one transform per call, i.e. per batch). Bilinear
interpolation of values in ``[low, high]`` stays in ``[low, high]``; pixels that come from
outside the image repeat the border (black for digits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .scenario import is_image_shape  # noqa: F401  (light: validate checks thief.augment with it)

# Rotation (degrees), scale and translation (fraction of the side: 0.08 of 28 pixels ~ 2 pixels)
# of the default augmentation: small enough that a digit stays the same digit.
MAX_DEGREES, MAX_SCALE, MAX_SHIFT = 10.0, 0.1, 0.08


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float | None = None,
                  scale: float | None = None, shift: float | None = None) -> torch.Tensor:
    """``x`` (N, C, H, W) with one random small affine transform per sample; same shape and dtype.

    Rotation uniform in [-degrees, degrees], scale in [1 - scale, 1 + scale], translation in
    [-shift, shift] of each side (defaults: the module's MAX_DEGREES, MAX_SCALE, MAX_SHIFT), all
    drawn from ``generator`` (so a seeded training run is reproducible)."""
    degrees = MAX_DEGREES if degrees is None else degrees
    scale = MAX_SCALE if scale is None else scale
    shift = MAX_SHIFT if shift is None else shift
    if x.dim() != 4:
        raise ValueError(f"random_affine needs image batches (N, C, H, W); got shape {tuple(x.shape)}.")
    n = x.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * bound

    angle = uniform(math.radians(degrees))
    factor = 1.0 + uniform(scale)
    tx, ty = uniform(2 * shift), uniform(2 * shift)  # affine_grid's coordinates span [-1, 1]: 2 per side
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gaussian_jitter(x: torch.Tensor, generator: torch.Generator, std: float, low: float, high: float) -> torch.Tensor:
    """``x`` plus Gaussian noise of ``std``, clipped to [low, high]: the perturbed view of a flat
    (tabular) input for label-free consistency, where image transforms do not apply."""
    return torch.clamp(x + torch.randn(x.shape, generator=generator) * std, low, high)
