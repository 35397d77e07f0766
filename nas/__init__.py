"""nas: discover tiny MNIST networks under a hard parameter budget."""

__version__ = "0.1.0"


def load_model(folder):
    """The network of a `nas export` folder, weights loaded, in eval mode (see nas.export)."""
    from nas.export import load_model

    return load_model(folder)
