"""nas: discover tiny MNIST networks under a hard parameter budget."""

import os

__version__ = "0.1.0"

# cuDNN picks convolution algorithms by its more careful heuristics (mode B), which suit these tiny
# convolutions better (docs/performance.md). Read by torch when it first plans a convolution; a
# value set by the user wins.
os.environ.setdefault("TORCH_CUDNN_USE_HEURISTIC_MODE_B", "1")


class NasError(Exception):
    """Bad input, or a state the user can fix: `nas` prints the message as one line and exits 2.
    Defined here, without torch, so that the command line reports one fast."""


class Interrupted(Exception):
    """A long run stopped by Ctrl-C or SIGTERM; the message says what was kept and how to resume
    (`nas` prints it and exits 130)."""


def load_model(folder, seed=None):
    """The network of a `nas export` folder or of a `nas replay`/`nas train` run folder (`seed`
    picks one of its seeds), weights loaded, in eval mode (see nas.export.load_model)."""
    from nas.export import load_model

    return load_model(folder, seed)
