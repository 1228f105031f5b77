"""Cortex: two-phase memory-and-reasoning QA (phase 1 router + Hopfield memory, phase 2 MoE
reasoning against a dense ablation) on the shared training loop."""
