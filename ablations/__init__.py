"""Script entry points of the ablations with the paper code's flags (no_constraint, node2)."""
