"""Training: configuration, optimisation, checkpoints, the loop, distributed data / model parallelism (Partial FC)."""
