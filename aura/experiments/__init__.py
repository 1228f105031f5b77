"""Experiments: one package per experiment (data wiring, steps, evaluation, records)."""
