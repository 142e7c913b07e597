"""Closed-loop evaluation: running episodes with a policy and summarising them honestly."""
