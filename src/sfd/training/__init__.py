"""Training: loss, one step, loop, EMA, checkpoints."""
