"""Training: the model registry, the training loop, checkpoints, tracking, evaluation."""
