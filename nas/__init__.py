"""nas: discover tiny MNIST networks under a hard parameter budget."""

__version__ = "0.1.0"


def load_model(folder, seed=None):
    """The network of a `nas export` folder or of a `nas replay`/`nas train` run folder (`seed`
    picks one of its seeds), weights loaded, in eval mode (see nas.export.load_model)."""
    from nas.export import load_model

    return load_model(folder, seed)
