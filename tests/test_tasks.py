"""The paper's XML changes, checked against the compiled MuJoCo model."""
import numpy as np
import pytest

from keycld.tasks import ENVIRONMENTS, TASK_SPECS, load_task, paper_xml, render, true_state


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def env(request):
    return request.param, load_task(request.param, random=0)


def _model(env):
    return env[1].physics.model


def test_no_damping(env):
    assert np.all(_model(env).dof_damping == 0.0)


def test_actuators(env):
    name, e = env
    m = _model(env)
    expected = {"pendulum": [2.0], "cartpole": [4.0, 1.0], "acrobot": [2.0, 2.0]}[name]
    assert m.nu == TASK_SPECS[name].num_actions == len(expected)
    np.testing.assert_array_equal(m.actuator_gear[:, 0], expected)
    assert not np.any(m.actuator_ctrllimited)
    np.testing.assert_array_equal(m.actuator_ctrlrange, [[-3.0, 3.0]] * m.nu)
    assert e.action_spec().shape == (m.nu,)


def test_camera_pose(env):
    name, e = env
    pos = {"pendulum": (0, -2.5, 0.6), "cartpole": (0, -6, 1), "acrobot": (0, -6, 2.1)}[name]
    np.testing.assert_allclose(_model(env).cam_pos[0], pos)
    # zaxis (0, -1, 0): the camera looks along +y, image x = world x, image up = world z.
    xmat = e.physics.data.cam_xmat[0].reshape(3, 3)
    np.testing.assert_allclose(xmat[:, 2], [0, -1, 0], atol=1e-9)
    np.testing.assert_allclose(xmat[:, 0], [1, 0, 0], atol=1e-9)


def test_time_step(env):
    name, e = env
    assert e.control_timestep() == pytest.approx(TASK_SPECS[name].dt)


def test_cartpole_geometry():
    e = load_task("cartpole", random=0)
    p = e.physics
    assert p.named.model.geom_size["rail1"][1] == 4.0 and p.named.model.geom_size["rail2"][1] == 4.0
    assert p.named.model.geom_size["pole_1"][0] == pytest.approx(0.09)
    assert p.named.model.geom_pos["floor"][2] == pytest.approx(-0.20)
    assert not p.named.model.jnt_limited["slider"]
    # unlimited slider: the cart can leave the old ±1.8 range
    with p.reset_context():
        p.named.data.qpos["slider"] = 3.0
    e.physics.step()
    assert p.named.data.qpos["slider"] > 2.5
    assert "decoration" in paper_xml("cartpole").split('name="cart"')[2].split("/>")[0]


def test_acrobot_geometry():
    p = load_task("acrobot", random=0).physics
    assert p.named.model.body_pos["upper_arm"][2] == pytest.approx(2.1)
    assert p.named.model.geom_size["upper_arm"][0] == pytest.approx(0.1)
    assert p.named.model.geom_size["lower_arm"][0] == pytest.approx(0.099)
    assert p.named.model.geom_size["floor"][0] == 6.0


def test_render_and_state(env):
    name, e = env
    e.reset()
    frame = render(e.physics)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    qpos, qvel = true_state(e.physics)
    assert qpos.shape == qvel.shape == (TASK_SPECS[name].num_keypoints,)
    qpos[0] += 1.0  # a copy, not a view
    assert e.physics.data.qpos[0] != qpos[0]


def test_unknown_environment():
    with pytest.raises(ValueError, match="unknown environment 'walker'.*pendulum, cartpole, acrobot"):
        load_task("walker")


def test_camera_renderer_shrinks_the_framebuffer_with_identical_pixels():
    """CameraRenderer sizes a fresh physics' offscreen buffer to 64×64 (a third of a frame's cost
    was clearing the 640×480 multisampled one); the pixels equal physics.render on a full buffer."""
    from keycld.tasks import CameraRenderer, set_state

    small, full = load_task("acrobot"), load_task("acrobot")
    camera = CameraRenderer(small.physics)
    assert (small.physics.model.vis.global_.offwidth, small.physics.model.vis.global_.offheight) == (64, 64)
    for qpos in ([0.3, -1.0], [2.5, 0.7], [-1.2, 3.0]):
        for env in (small, full):
            set_state(env.physics, np.array(qpos), np.zeros(2))
        np.testing.assert_array_equal(camera(), render(full.physics))
    assert full.physics.model.vis.global_.offwidth == 640
    kept = load_task("pendulum")
    CameraRenderer(kept.physics, shrink_framebuffer=False)
    assert kept.physics.model.vis.global_.offwidth == 640
