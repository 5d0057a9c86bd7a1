"""Stage 1, the model: loading checkpoints and tokenizers, the family registry, where the blocks are."""
