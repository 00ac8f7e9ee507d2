"""Controllers and agents for the KeyCLD environments, judged on the real simulation.

``agents.base``: the agent protocol, success criteria and the episode runner;
``agents.energy_shaping``: energy pumping + LQR/PD catch on the learned or the true model;
``agents.mpc``: receding-horizon planners through the differentiable learned model;
``agents.evaluate``: the closed-loop evaluation CLI; ``agents.train_sb3``: RL in the learned env.
"""
