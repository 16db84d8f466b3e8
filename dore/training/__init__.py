"""The one training loop every method runs, its batching and its checkpoints."""
