"""Where a trained model's keypoints sit on real frames at rest, for a few known poses.

    python benchmarks/keypoint_poses.py RUN_DIR

Prints, per pose (joint positions qpos), the encoded keypoints x (image units, y up) and the
constraint residual Φ(x). A usable model tracks the same part with the same keypoint in every
pose (cartpole: keypoint 1 on the cart at y = 0; acrobot: keypoint 1 at the elbow); a keypoint
that does not move between poses is parked, however good the run's VPT looks.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MUJOCO_GL", "egl")

POSES = {"pendulum": [(0.0,), (np.pi,), (np.pi / 2,)],
         "cartpole": [(0.0, np.pi), (0.5, 0.0), (-0.5, np.pi / 2), (0.3, -np.pi / 2)],
         "acrobot": [(0.0, 0.0), (np.pi, 0.0), (np.pi / 2, 0.0), (np.pi / 2, np.pi / 2)]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    from keycld.tasks import load_task, render, set_state
    from keycld.rundir import load_model
    from keycld_gym.loading import encode_keypoints

    model, weights, cfg = load_model(args.run_dir)
    task = load_task(cfg.environment, 0)
    print(f"{cfg.environment}: qpos -> keypoints x, Φ(x)")
    for q in POSES[cfg.environment]:
        set_state(task.physics, np.asarray(q), np.zeros(len(q)))
        kp = encode_keypoints(model, weights, render(task.physics)[None])[0]
        phi = np.asarray(model.dynamics.phi(kp))
        print(f"{np.round(q, 3)} -> {np.round(kp, 3)}, Φ {np.round(phi, 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
