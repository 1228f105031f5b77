"""Mixture models: GMM and HMM fitted by EM in JAX, model managers, and the Cerebrum controller."""
