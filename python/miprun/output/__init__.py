"""Stage 6, the output: remove blocks, write the checkpoint, report and plots through one guarded writer."""
