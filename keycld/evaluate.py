"""Valid prediction time (VPT) and other evaluation of a trained model.

VPT of a sequence: the number of predicted frames (frames 2 … T−1, from the state encoded on
frames 0–2) before the per-frame pixel MSE first exceeds the dataset's ε; T−2 if never.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from keycld.model.keycld import KeyCLD


def vpt_from_mse(mse: jnp.ndarray, epsilon: float) -> jnp.ndarray:
    """(..., F) per-frame MSE -> (...,) frames before the first MSE > ε (F if none)."""
    over = mse > epsilon
    return jnp.where(over.any(-1), jnp.argmax(over, axis=-1), mse.shape[-1])


@partial(jax.jit, static_argnums=0)
def _predict_mse(model: KeyCLD, params, frames_u8, action):
    images = frames_u8.astype(jnp.float32) / 255.0
    pred, xs = model.predict(params, images, action)
    mse = jnp.mean((pred - images[2:]) ** 2, axis=(1, 2, 3))
    return mse, xs


def prediction_errors(model: KeyCLD, params, frames: np.ndarray, actions: np.ndarray):
    """Per-frame MSE (R, T−2) and predicted keypoints (R, T−2, 2K) for R sequences (uint8 frames)."""
    out = [_predict_mse(model, params, jnp.asarray(f), jnp.asarray(a, jnp.float32))
           for f, a in zip(frames, actions)]
    return np.stack([np.asarray(m) for m, _ in out]), np.stack([np.asarray(x) for _, x in out])


@partial(jax.jit, static_argnums=0)
def _autoencode_mse(model: KeyCLD, params, frames_u8):
    images = frames_u8.astype(jnp.float32) / 255.0
    kp, _ = model.encode(params, images)
    mse = jnp.mean((model.render(params, kp) - images) ** 2)
    residual = (jnp.mean(jnp.abs(jax.vmap(model.dynamics.constraint_residual)(kp)))
                if model.system.constrained else jnp.zeros(()))
    return mse, residual


def autoencoding(model: KeyCLD, params, dataset, max_sequences: int = 16) -> dict:
    """How well the first ``max_sequences`` sequences of ``dataset`` (a Dataset split) are
    auto-encoded through their keypoints:

    * ``reconstruction_ratio``: pixel MSE of ``render(encode(frame))`` over every frame, divided
      by the dataset's ε (the MSE of the mean training image). About 1 while the renderer draws
      the mean image (keypoints not localised), well below 1 once the keypoints carry the pose;
    * ``encoded_constraint_residual``: mean |Φ(x)| of the encoded keypoints (constrained
      systems; 0 otherwise), in the constraint's units (image units for the built-in systems).
    """
    out = [_autoencode_mse(model, params, jnp.asarray(f)) for f in dataset.frames[:max_sequences]]
    mse = float(np.mean([float(m) for m, _ in out]))
    return {"reconstruction_ratio": mse / float(dataset.epsilon),
            "encoded_constraint_residual": float(np.mean([float(r) for _, r in out]))}


def vpt_stats(vpt: np.ndarray, max_frames: int) -> dict:
    return dict(mean=float(np.mean(vpt)), std=float(np.std(vpt)), median=float(np.median(vpt)),
                n=int(vpt.size), max_frames=int(max_frames))


def evaluate_vpt(model: KeyCLD, params, dataset) -> dict:
    """VPT statistics over every sequence of ``dataset`` (a ``keycld.data.Dataset`` split)."""
    mse, xs = prediction_errors(model, params, dataset.frames, dataset.action)
    vpt = np.asarray(vpt_from_mse(jnp.asarray(mse), dataset.epsilon))
    stats = vpt_stats(vpt, mse.shape[1])
    stats["epsilon"] = float(dataset.epsilon)
    stats["per_sequence"] = vpt.tolist()
    # |Φ| of the predicted keypoints: the known constraints, whether or not the model uses them
    if model.system.constrained:
        res = np.abs(np.asarray(jax.vmap(jax.vmap(model.dynamics.constraint_residual))(jnp.asarray(xs))))
        stats["constraint_residual"] = dict(mean=float(res.mean()), max=float(res.max()),
                                            median=float(np.median(res)))
    return stats


def hold_last_frame_vpt(dataset) -> dict:
    """VPT statistics of the trivial predictor that repeats frame 2 (the newest of the three
    frames a model sees) for frames 2 … T−1: the floor a learned model must clear."""
    frames = dataset.frames.astype(np.float32) / 255.0
    mse = np.mean((frames[:, 2:] - frames[:, 2:3]) ** 2, axis=(2, 3, 4))
    vpt = np.asarray(vpt_from_mse(jnp.asarray(mse), dataset.epsilon))
    return vpt_stats(vpt, mse.shape[1])
