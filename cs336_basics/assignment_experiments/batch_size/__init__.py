"""Batch-size experiment (CS336 assignment 1): a thin client of the sweep engine."""
