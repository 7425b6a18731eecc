"""landscape: measure how flat the minima of PyTorch checkpoints are."""

__version__ = "0.1.0"
