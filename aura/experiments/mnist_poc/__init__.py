"""The MNIST expert POC: conv stem -> phasor map -> spiking attention -> LiquidMoE (growth)."""
