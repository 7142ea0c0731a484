"""Training and evaluation loops, checkpoints, and the run orchestration."""
