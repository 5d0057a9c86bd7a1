"""Stage 3, hidden states block by block: one runner over in-memory, streamed or device-mapped weights."""
