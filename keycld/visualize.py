"""Validation GIFs and potential-energy plots."""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from keycld.model.keypoints import gaussian_maps
from keycld.viz import save_gif, to_uint8

_COLOURS = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.5, 1.0], [1.0, 1.0, 0.2]], np.float32)


def colour_maps(maps: np.ndarray) -> np.ndarray:
    """(T, H, W, K) maps in [0, 1] -> (T, H, W, 3) RGB, one colour per keypoint."""
    k = maps.shape[-1]
    return np.clip(np.einsum("thwk,kc->thwc", maps, _COLOURS[:k]), 0, 1)


def validation_gif(model, params, dataset, path: str | os.PathLike, index: int = 0, fps: float = 15.0) -> None:
    """GIF of one validation sequence: ground truth | keypoint heatmaps | Gaussian maps | prediction,
    written by keycld.viz.save_gif within its default byte budget."""
    frames = jnp.asarray(dataset.frames[index], jnp.float32) / 255.0
    kp, probs = model.encode(params, frames)
    pred, _ = model.predict(params, frames, jnp.asarray(dataset.action[index], jnp.float32))
    t = frames.shape[0]
    if probs is None:
        heat = np.zeros((t, 64, 64, 3), np.float32)
    else:
        p = np.asarray(probs)
        heat = colour_maps(p / (p.max(axis=(1, 2), keepdims=True) + 1e-12))
    gauss = colour_maps(np.asarray(gaussian_maps(kp, model.sigma)))
    pred_full = np.concatenate([np.zeros((2, 64, 64, 3), np.float32), np.asarray(pred)])
    strip = np.concatenate([np.asarray(frames), heat, gauss, pred_full], axis=2)
    save_gif(path, to_uint8(strip), fps)
