"""KeyCLD training loss for one image sequence (the paper's loss).

total = reconstruction + dynamics_weight · dynamics + bce_weight · BCE
        [+ constraint_weight · constraint], where
* reconstruction: squared pixel error of the rendered encoded keypoints, summed per frame,
  averaged over frames;
* dynamics: from every start frame s = 1 … T−1−n, integrate n steps from the central-difference
  state (ẋ projected on the constraint tangent space) and sum the squared keypoint errors
  against the encoded keypoints of frames s+1 … s+n; averaged over starts;
* BCE: heatmaps normalised to peak 1 against stop-gradient Gaussian maps of their keypoints,
  averaged over pixels, keypoints and frames (heatmap models only);
* foreground (not in the paper; 0 unless ``foreground_weight`` > 0, heatmap models only): the
  cross-entropy of each keypoint's heatmap against the frame's foreground distribution (pixels
  weighted by their squared distance to the static background), ``foreground_attention``. It
  ties the keypoints to the moving parts from the first step. It is a warm-up option
  (``TrainConfig.warmup_foreground_weight``, off by default; no preset sets it). Every heatmap
  is drawn to the same whole-frame foreground, so with several keypoints it does not tell them
  apart: the other terms must.
* constraint (not in the paper; 0 unless ``constraint_weight`` > 0, constrained models only):
  the mean over frames and constraints of Φ(x_t)² of the encoded keypoints. The constrained
  dynamics conserve Φ whatever its value, so nothing but the data and the initialisation decides
  which keypoint is which; this term penalises encoded keypoints that leave Φ(x) = 0 so that
  the constraints take part in picking the order. No preset sets it; its effect on the cartpole
  is in benchmarks/results/cpu_preset_cartpole/README.md.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from keycld.model.keycld import KeyCLD
from keycld.model.keypoints import central_differences, gaussian_maps


def dynamics_loss(model: KeyCLD, params, kp: jnp.ndarray, action: jnp.ndarray, n: int) -> jnp.ndarray:
    """Multi-step prediction error for encoded keypoints kp (T, 2K); action (A,) constant or
    (T, A) with ``action[t]`` held from frame t to t+1."""
    t = kp.shape[0]
    x, xd = central_differences(kp, model.dt)  # frames 1..T-2
    starts = t - 1 - n
    x0, xd0 = x[:starts], xd[:starts]
    xd0 = jax.vmap(model.dynamics.project_velocity)(x0, xd0)
    if action.ndim == 2:  # start i (frame i+1) is driven by action[i+1 .. i+n]
        us = action[jnp.arange(starts)[:, None] + jnp.arange(1, n + 1)[None, :]]  # (S, n, A)
        pred, _ = jax.vmap(lambda a, b, u: model.rollout(params, a, b, u, n))(x0, xd0, us)
    else:
        pred, _ = jax.vmap(lambda a, b: model.rollout(params, a, b, action, n))(x0, xd0)  # (S, n, 2K)
    # x[i] is frame i+1, so start i is compared with frames i+2 .. i+n+1
    target = kp[jnp.arange(starts)[:, None] + jnp.arange(2, n + 2)[None, :]]
    return jnp.mean(jnp.sum((pred - target) ** 2, axis=(1, 2)))


def constraint_consistency(model: KeyCLD, kp: jnp.ndarray) -> jnp.ndarray:
    """Mean of Φ(kp_t)² over frames and constraints, kp (T, 2K); 0 if unconstrained."""
    if not model.dynamics.constrained:
        return jnp.zeros(())
    residual = jax.vmap(model.dynamics.phi)(kp)  # (T, C)
    return jnp.mean(residual ** 2)


def heatmap_bce(probs: jnp.ndarray, kp: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """BCE of peak-normalised heatmaps (T, H, W, K) vs Gaussian maps of kp (T, 2K)."""
    heat = probs / (jnp.max(probs, axis=(1, 2), keepdims=True) + 1e-12)
    heat = jnp.clip(heat, 1e-6, 1 - 1e-6)
    target = jax.lax.stop_gradient(gaussian_maps(kp, sigma))
    return -jnp.mean(target * jnp.log(heat) + (1 - target) * jnp.log(1 - heat))


def foreground_attention(probs: jnp.ndarray, images: jnp.ndarray, background: jnp.ndarray) -> jnp.ndarray:
    """Cross-entropy of heatmaps against each frame's foreground, mean over frames and keypoints.

    Args:
        probs: (T, H, W, K) spatial-softmax probabilities; images: (T, H, W, 3) in [0, 1];
        background: (H, W, 3) in [0, 1] (``keycld.data.background_image``).
    Returns:
        −Σ_p f_t(p) log probs_k(p), with f_t ∝ ‖images_t(p) − background(p)‖² normalised to sum 1
        per frame (about 0 for a frame without foreground).
    """
    d = jnp.sum((images - background) ** 2, axis=-1)  # (T, H, W)
    target = jax.lax.stop_gradient(d / (jnp.sum(d, axis=(1, 2), keepdims=True) + 1e-6))
    return -jnp.mean(jnp.sum(target[..., None] * jnp.log(probs + 1e-12), axis=(1, 2)))


def sequence_loss(model: KeyCLD, params, frames_u8: jnp.ndarray, action: jnp.ndarray, key: jax.Array,
                  num_predicted_steps: int, dynamics_weight: float, bce_weight: float,
                  augment: bool = True, constraint_weight: float = 0.0, foreground_weight: float = 0.0,
                  background: jnp.ndarray | None = None) -> tuple[jnp.ndarray, dict]:
    """Loss of one sequence.

    Args:
        frames_u8: (T, 64, 64, 3) uint8; action: (A,) or per frame (T, A), dataset units;
        key: augmentation key; background: (64, 64, 3) in [0, 1], needed when
        ``foreground_weight`` > 0 (ignored by models without heatmaps).
    Returns:
        (total loss, dict of the terms).
    """
    images = frames_u8.astype(jnp.float32) / 255.0
    t = images.shape[0]
    transform = jax.random.randint(key, (t,), 0, 8) if (augment and model.heatmaps) else None
    kp, probs = model.encode(params, images, transform)
    recon = model.render(params, kp)
    rec = jnp.sum((recon - images) ** 2) / t
    dyn = dynamics_loss(model, params, kp, action, num_predicted_steps)
    bce = heatmap_bce(probs, kp, model.sigma) if probs is not None else jnp.zeros(())
    total = rec + dynamics_weight * dyn + bce_weight * bce
    terms = {"reconstruction": rec, "dynamics": dyn, "bce": bce}
    if foreground_weight > 0 and probs is not None:
        if background is None:
            raise ValueError("foreground_weight > 0 needs the background image (keycld.data.background_image)")
        fg = foreground_attention(probs, images, background)
        total = total + foreground_weight * fg
        terms["foreground"] = fg
    if constraint_weight > 0:
        con = constraint_consistency(model, kp)
        total = total + constraint_weight * con
        terms["constraint"] = con
    return total, {"loss": total, **terms}
