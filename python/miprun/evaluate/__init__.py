"""Measurements of a (pruned) model: perplexity, zero-shot accuracy, parameter counts, speed."""
