"""Split-MNIST continual learning: growth, freezing and novelty gates vs fine-tuning."""
