"""nas: discover tiny MNIST networks under a hard parameter budget."""

__version__ = "0.1.0"
