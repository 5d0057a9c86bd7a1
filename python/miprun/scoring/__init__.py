"""Stage 4, the score table: every run of blocks scored in one pass, on one process or many."""
