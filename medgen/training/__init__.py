"""Pieces of the training script: noise schedules and losses, model tasks, EMA, checkpoints, sample grids."""
