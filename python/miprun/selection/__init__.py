"""Stage 5, the plan: selectors that choose the blocks to remove from a score table."""
