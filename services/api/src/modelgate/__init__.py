"""modelgate: a production serving stack for PyTorch models."""

__version__ = "0.1.0"
