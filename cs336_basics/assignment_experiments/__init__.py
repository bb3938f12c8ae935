"""The CS336 assignment-1 experiments built on cs336_basics (see README.md)."""
