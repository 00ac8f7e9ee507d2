"""Keypoint geometry on 64×64 images.

Image coordinates: origin at the image centre, x to the right, y upwards, both in [-1, 1]
(pixel centres at ``linspace(-1, 1, 64)``; row 0 is the top, y = +1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMAGE_SIZE = 64


def pixel_grid(size: int = IMAGE_SIZE) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(X, Y) each (size, size): image coordinates of the pixel centres."""
    c = jnp.linspace(-1.0, 1.0, size)
    return jnp.meshgrid(c, -c, indexing="xy")


def spatial_softmax(logits: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Heatmap logits (..., H, W, K) -> (probabilities (..., H, W, K), keypoints (..., 2K)).

    Keypoints are the expected image coordinates [x_1, y_1, ..., x_K, y_K].
    """
    *batch, h, w, k = logits.shape
    flat = logits.reshape(*batch, h * w, k)
    probs = jax.nn.softmax(flat, axis=-2).reshape(logits.shape)
    gx, gy = pixel_grid(h)
    x = jnp.einsum("...hwk,hw->...k", probs, gx)
    y = jnp.einsum("...hwk,hw->...k", probs, gy)
    return probs, jnp.stack([x, y], axis=-1).reshape(*batch, 2 * k)


def gaussian_maps(keypoints: jnp.ndarray, sigma: float = 0.1, size: int = IMAGE_SIZE) -> jnp.ndarray:
    """Keypoints (..., 2K) in image units -> Gaussian maps (..., size, size, K) with peak 1."""
    *batch, n = keypoints.shape
    kp = keypoints.reshape(*batch, 1, 1, n // 2, 2)
    gx, gy = pixel_grid(size)
    d2 = (gx[..., None] - kp[..., 0]) ** 2 + (gy[..., None] - kp[..., 1]) ** 2
    return jnp.exp(-d2 / (2.0 * sigma ** 2))


# ----- 8-fold dihedral augmentation as pixel permutations (one gather, no branches) -----
def _dihedral_permutations(size: int) -> np.ndarray:
    """(8, size*size) int32: ``out.flat[p[k]]`` gives transform k (rot90^(k%4), flip if k>=4)."""
    idx = np.arange(size * size).reshape(size, size)
    perms = []
    for k in range(8):
        t = np.rot90(idx, k % 4)
        if k >= 4:
            t = t[:, ::-1]
        perms.append(t.reshape(-1))
    return np.stack(perms).astype(np.int32)


_PERMS = _dihedral_permutations(IMAGE_SIZE)
_INVERSE = np.argsort(_PERMS, axis=1).astype(np.int32)


def augment(images: jnp.ndarray, transform: jnp.ndarray) -> jnp.ndarray:
    """Apply dihedral transform ``transform[n]`` in {0..7} to image n.

    Args:
        images: (N, H, W, C); transform: (N,) int.
    """
    n, h, w, c = images.shape
    perm = jnp.asarray(_PERMS)[transform]  # (N, H*W)
    flat = images.reshape(n, h * w, c)
    return jnp.take_along_axis(flat, perm[..., None], axis=1).reshape(images.shape)


def unaugment(images: jnp.ndarray, transform: jnp.ndarray) -> jnp.ndarray:
    """Inverse of ``augment`` for the same ``transform``."""
    n, h, w, c = images.shape
    perm = jnp.asarray(_INVERSE)[transform]
    flat = images.reshape(n, h * w, c)
    return jnp.take_along_axis(flat, perm[..., None], axis=1).reshape(images.shape)


def central_differences(x: jnp.ndarray, dt: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Keypoints (T, D) -> positions (T-2, D) at frames 1..T-2 and velocities (T-2, D)."""
    return x[1:-1], (x[2:] - x[:-2]) / (2.0 * dt)
