"""KeyCLD networks and dynamics.

* ``keypoints``: image-coordinate grid, spatial softmax, Gaussian maps, 8-fold augmentation.
* ``networks``: U-Net keypoint estimator and renderer (and the fully connected ablation).
* ``constraints``: the known holonomic constraints Φ(x) = 0 per system.
* ``dynamics``: constrained Lagrangian dynamics in keypoint coordinates, and the ablations.
* ``integrators``: explicit Euler, RK4 and adaptive dopri5 (diffrax).
* ``keycld``: the full model (params container, encode/render/predict).
"""
