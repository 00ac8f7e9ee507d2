"""The paper's dm_control swing-up tasks (pendulum, cartpole, acrobot).

KeyCLD's datasets were made with a fork of dm_control whose suite XML files differ from
upstream in a few places (camera pose, damping, actuators, rail length; see
``XML_EDITS``). Here the upstream MJCF text is patched at load time, so the stock
``dm_control`` package gives the paper's physics.

Public API:
    load_task(environment, random=None) -> dm_control.rl.control.Environment
    true_state(physics) -> (qpos, qvel)
    render(physics) -> (64, 64, 3) uint8 frame of camera 0
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

ENVIRONMENTS = ("pendulum", "cartpole", "acrobot")
IMAGE_SIZE = 64

# (upstream text, paper text) pairs. Every occurrence of the upstream text is replaced
# (the cartpole rail size appears twice: rail1 and rail2).
XML_EDITS: dict[str, tuple[tuple[str, str], ...]] = {
    "pendulum": (
        ("<camera name=\"fixed\" pos=\"0 -1.5 2\" xyaxes='1 0 0 0 1 1'/>",
         '<camera name="fixed" pos="0 -2.5 .6" zaxis="0 -1 0"/>'),
        ('damping="0.1"', 'damping="0"'),
        ('<motor name="torque" joint="hinge" gear="1" ctrlrange="-1 1" ctrllimited="true"/>',
         '<motor name="torque" joint="hinge" gear="2" ctrlrange="-3 3" ctrllimited="false"/>'),
    ),
    "cartpole": (
        ('damping="2e-6"', 'damping="0"'),
        ('size="0.045" material="self" mass=".1"', 'size="0.09" material="self" mass=".1"'),
        ('<camera name="fixed" pos="0 -4 1" zaxis="0 -1 0"/>',
         '<camera name="fixed" pos="0 -6 1" zaxis="0 -1 0"/>'),
        ('pos="0 0 -.05" size="4 4 .2"', 'pos="0 0 -.20" size="4 4 .2"'),
        ('size="0.02 2"', 'size="0.02 4"'),
        ('limited="true" axis="1 0 0" range="-1.8 1.8" solreflimit=".08 1" damping="5e-4"',
         'limited="false" axis="1 0 0" range="-1.8 1.8" solreflimit=".08 1" damping="0"'),
        ('size="0.2 0.15 0.1" material="self"', 'size="0.2 0.15 0.1" material="decoration"'),
        ('<motor name="slide" joint="slider" gear="10" ctrllimited="true" ctrlrange="-1 1" />',
         '<motor name="slide" joint="slider" gear="4" ctrllimited="false" ctrlrange="-3 3" />\n'
         '    <motor name="torque" joint="hinge_1" gear="1" ctrlrange="-3 3" ctrllimited="false"/>'),
    ),
    "acrobot": (
        ('<joint damping=".05"/>', '<joint damping=".0"/>'),
        ('size="3 3 .2"', 'size="6 6 .2"'),
        ('<camera name="fixed" pos="0 -6 2" zaxis="0 -1 0"/>',
         '<camera name="fixed" pos="0 -6 2.1" zaxis="0 -1 0"/>'),
        ('<body name="upper_arm" pos="0 0 2">', '<body name="upper_arm" pos="0 0 2.1">'),
        ('fromto="0 0 0 0 0 1" size="0.05" material="self"',
         'fromto="0 0 0 0 0 1" size="0.100" material="decoration"'),
        ('fromto="0 0 0 0 0 1" size="0.049" material="self"',
         'fromto="0 0 0 0 0 1" size="0.099" material="self"'),
        ('<motor name="elbow" joint="elbow" gear="2" ctrllimited="true" ctrlrange="-1 1"/>',
         '<motor name="shoulder" joint="shoulder" gear="2" ctrllimited="false" ctrlrange="-3 3"/>\n'
         '    <motor name="elbow" joint="elbow" gear="2" ctrllimited="false" ctrlrange="-3 3"/>'),
    ),
}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Static facts about one of the paper's systems.

    Attributes:
        name: environment name.
        dt: control (and physics) time step in seconds.
        num_actions: number of actuators A.
        num_keypoints: number of keypoints K of the KeyCLD model.
        qpos_low, qpos_high: bounds of the uniform "random" initial joint positions.
        qvel_scale: bound of the uniform "random" initial joint velocities (rad/s or m/s).
        action_scale: the datasets' action range is [-action_scale, action_scale].
    """

    name: str
    dt: float
    num_actions: int
    num_keypoints: int
    qpos_low: tuple[float, ...]
    qpos_high: tuple[float, ...]
    qvel_scale: float = 0.1
    action_scale: float = 2.0


TASK_SPECS: dict[str, TaskSpec] = {
    "pendulum": TaskSpec("pendulum", 0.02, 1, 1, (-np.pi,), (np.pi,)),
    "cartpole": TaskSpec("cartpole", 0.01, 2, 2, (-1.0, -np.pi), (1.0, np.pi)),
    "acrobot": TaskSpec("acrobot", 0.01, 2, 2, (-np.pi, -np.pi), (np.pi, np.pi)),
}


def check_environment(environment: str) -> TaskSpec:
    """Return the spec of ``environment`` or raise ValueError naming the allowed values."""
    if environment not in TASK_SPECS:
        raise ValueError(
            f"unknown environment {environment!r}; allowed: {', '.join(ENVIRONMENTS)}")
    return TASK_SPECS[environment]


def paper_xml(environment: str) -> str:
    """The suite MJCF of ``environment`` with the paper's edits applied."""
    check_environment(environment)
    from dm_control.suite import common

    xml = common.read_model(f"{environment}.xml").decode()
    for upstream, paper in XML_EDITS[environment]:
        if upstream not in xml:
            raise RuntimeError(
                f"dm_control's {environment}.xml no longer contains {upstream!r}; the paper's "
                "edits were written for dm_control 1.0.50")
        xml = xml.replace(upstream, paper)
    return xml


def load_task(environment: str, random: np.random.RandomState | int | None = None,
              time_limit: float | None = None):
    """Build the paper's swing-up task as a ``dm_control.rl.control.Environment``.

    Args:
        environment: one of ``ENVIRONMENTS``.
        random: RandomState (or seed) the task draws its initial states from.
        time_limit: episode length in seconds; default dm_control's 20 s (1000 steps for
            cartpole/acrobot, 1000 for pendulum at dt=0.02).
    """
    check_environment(environment)
    from dm_control.rl import control
    from dm_control.suite import acrobot, cartpole, common, pendulum

    xml = paper_xml(environment)
    if environment == "pendulum":
        physics = pendulum.Physics.from_xml_string(xml, common.ASSETS)
        task = pendulum.SwingUp(random=random)
        default_limit = pendulum._DEFAULT_TIME_LIMIT
    elif environment == "cartpole":
        physics = cartpole.Physics.from_xml_string(xml, common.ASSETS)
        task = cartpole.Balance(swing_up=True, sparse=False, random=random)
        default_limit = cartpole._DEFAULT_TIME_LIMIT
    else:
        physics = acrobot.Physics.from_xml_string(xml, common.ASSETS)
        task = acrobot.Balance(sparse=False, random=random)
        default_limit = acrobot._DEFAULT_TIME_LIMIT
    limit = default_limit if time_limit is None else time_limit
    return control.Environment(physics, task, time_limit=limit)


def true_state(physics) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth joint positions and velocities, each (nq,) float64 copies.

    pendulum: [hinge angle]; cartpole: [cart position (m), pole angle];
    acrobot: [shoulder angle, elbow angle]. Angles in radians, 0 = upright.
    """
    return physics.data.qpos.copy(), physics.data.qvel.copy()


def set_state(physics, qpos: np.ndarray, qvel: np.ndarray) -> None:
    """Write joint positions/velocities inside the physics' reset context."""
    with physics.reset_context():
        physics.data.qpos[:] = qpos
        physics.data.qvel[:] = qvel


def render(physics, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 RGB frame of camera 0 (the paper's ``fixed`` camera)."""
    return physics.render(size, size, camera_id=0)


class CameraRenderer:
    """``render(physics)`` without re-allocating a camera and scene for every frame.

    ``physics.render`` builds a ``Camera`` (and its ``MjvScene``) on each call and frees it
    afterwards; keeping one camera per physics gives the same pixels (tested) at a lower
    cost per frame.

    When the physics has no GL context yet, its offscreen framebuffer is sized to the camera
    (``size``², instead of the suite's 640×480 with 4× multisampling): llvmpipe clears the whole
    framebuffer on every frame, which with the suite's buffer is a third of the cost of a 64×64
    frame. The pixels are identical (tested against ``physics.render`` on a full-size buffer);
    larger renders on the same physics then fail with dm_control's framebuffer-size error.
    ``shrink_framebuffer=False`` keeps the model's size.
    """

    def __init__(self, physics, size: int = IMAGE_SIZE, shrink_framebuffer: bool = True):
        from dm_control.mujoco.engine import Camera

        if shrink_framebuffer and getattr(physics, "_contexts", None) is None:
            visual = physics.model.vis.global_
            visual.offwidth, visual.offheight = size, size
        self._camera = Camera(physics, height=size, width=size, camera_id=0)

    def __call__(self) -> np.ndarray:
        # the camera renders into one reused buffer: copy so earlier frames stay intact
        return self._camera.render().copy()
