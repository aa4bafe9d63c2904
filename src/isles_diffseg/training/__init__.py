"""Training: losses, optimizers, schedulers, augmentation, EMA, checkpoints, the trainer and its launchers."""
