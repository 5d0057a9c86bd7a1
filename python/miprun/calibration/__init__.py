"""Stage 2, calibration tokens: read documents, tokenise, pack into seeded windows."""
