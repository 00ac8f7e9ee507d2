"""Your own system, end to end: a bead sliding on a parabolic wire, pushed sideways.

This file is both the System spec that ``keycld train --system`` reads and the simulator that
makes its video (60 lines of NumPy: physics and drawing). Nothing here is one of the paper's
systems; KeyCLD learns the bead's dynamics from the frames and the actions alone.

    python examples/bead_on_wire.py --out bead.npz                       # 200 runs × 50 frames
    keycld train --system examples/bead_on_wire.py --data bead.npz --preset cpu --num_epochs 4 --out runs/bead
    keycld export runs/bead --out models/bead
    python -c "import gymnasium as gym, keycld_gym; env = gym.make('KeyCLD-v0', checkpoint='models/bead')"

What you provide: the number of keypoints (one point mass per moving part you want the model to
track: here 1, the bead), the actuators, dt, and the constraint Φ(x) = 0 the keypoints obey in
image coordinates ([-1, 1] spans the 64×64 image, y up). Here the bead stays on the wire
y = A·x² + C, exactly as it is drawn.
"""
from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

from keycld import System

A, B, C = 0.8, 0.0, -0.25  # the wire: y = A x² + B x + C, image units
GRAVITY = 6.0  # image units / s²
FORCE = 1.5  # image units / s² per unit of action (mass 1)
DT = 0.02  # seconds between frames
RADIUS = 0.15  # the bead's radius, image units
START, SPEED = (-0.6, 0.6), 0.5  # initial positions (image units) and speeds (image units / s)


def constraint(x):
    """Φ(x) = y − (A x² + B x + C): the bead is on the wire."""
    return jnp.array([x[1] - (A * x[0] ** 2 + B * x[0] + C)])


def reward(x, xd, u):
    """1 with the bead at x = 0.5 on the wire's right arm, falling off with distance."""
    return jnp.exp(-(((x[0] - 0.5) / 0.1) ** 2))


SYSTEM = System(name="bead", num_keypoints=1, action_dim=1, dt=DT, constraint=constraint, reward=reward,
                action_scale=1.0, description="a bead on the parabolic wire y = 0.8 x² − 0.25, pushed sideways")


def acceleration(s, sd, u):
    """ẍ of the bead's horizontal position s (Euler–Lagrange on the wire, no friction)."""
    slope = 2 * A * s + B
    return (FORCE * u - slope * 2 * A * sd ** 2 - GRAVITY * slope) / (1 + slope ** 2)


def simulate(s, sd, actions, substeps=4):
    """Horizontal positions after each step, one action per step (RK4 with substeps)."""
    out, h = [], DT / substeps
    for u in actions:
        for _ in range(substeps):
            k1 = (sd, acceleration(s, sd, u))
            k2 = (sd + h / 2 * k1[1], acceleration(s + h / 2 * k1[0], sd + h / 2 * k1[1], u))
            k3 = (sd + h / 2 * k2[1], acceleration(s + h / 2 * k2[0], sd + h / 2 * k2[1], u))
            k4 = (sd + h * k3[1], acceleration(s + h * k3[0], sd + h * k3[1], u))
            s, sd = s + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]), sd + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        out.append(s)
    return np.array(out)


GRID = np.linspace(-1, 1, 64)
PX, PY = np.meshgrid(GRID, -GRID)  # pixel centres in image units, row 0 at the top
WIRE = np.abs(PY - (A * PX ** 2 + B * PX + C)) < 0.025


def draw(s):
    """(64, 64, 3) uint8: dark background, grey wire, red bead (anti-aliased) at x = s."""
    img = np.full((64, 64, 3), 30.0)
    img[WIRE] = 150.0
    dist = np.hypot(PX - s, PY - (A * s ** 2 + B * s + C))
    alpha = np.clip((RADIUS - dist) / (2 / 63) + 0.5, 0, 1)[..., None]
    return (img * (1 - alpha) + np.array([230.0, 40.0, 40.0]) * alpha).round().astype(np.uint8)


def make_runs(num_runs, num_frames, seed=0, hold=10):
    """frames uint8 (N, T, 64, 64, 3) and actions float32 (N, T, 1), each held for ``hold`` frames."""
    rng = np.random.default_rng(seed)
    frames = np.empty((num_runs, num_frames, 64, 64, 3), np.uint8)
    actions = np.repeat(rng.uniform(-1, 1, (num_runs, -(-num_frames // hold), 1)), hold, axis=1)[:, :num_frames]
    actions[rng.random(num_runs) < 0.2] = 0.0  # some runs unforced, as in the paper's datasets
    for i in range(num_runs):  # frame t shows the state after t steps; actions[i, t] acts from t to t+1
        s0 = rng.uniform(*START)
        s = np.concatenate([[s0], simulate(s0, rng.uniform(-SPEED, SPEED), actions[i, :-1, 0])])
        frames[i] = [draw(v) for v in s]
    return frames, actions.astype(np.float32)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="simulate and draw the bead on a wire; write RUNS.npz")
    p.add_argument("--out", default="bead.npz")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    frames, actions = make_runs(args.runs, args.frames, args.seed)
    np.savez_compressed(args.out, frames=frames, actions=actions)
    print(f"wrote {args.out}: frames {frames.shape}, actions {actions.shape}")
