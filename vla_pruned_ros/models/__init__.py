"""Model adapters: the embedded default VLA (and, later, adapters for users' checkpoints)."""
