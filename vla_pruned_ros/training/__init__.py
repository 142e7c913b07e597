"""Behaviour cloning of the embedded VLA: expert data collection and the training loop."""
