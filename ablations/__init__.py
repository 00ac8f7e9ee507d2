"""The original README's ablation entry points (no_constraint, node2)."""
