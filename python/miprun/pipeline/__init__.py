"""The steps put together: ``prune`` (score, select, remove, save), ``compare`` and the demo."""
