"""nas: discover tiny MNIST networks under a hard parameter budget.

The package root holds what every module shares and nothing that imports torch: the version and
the two exceptions the command line turns into one line and an exit code. A model of an export or
a replay loads with `nas.export.load_model(folder)`.
"""

__version__ = "0.1.0"


class NasError(Exception):
    """Bad input, or a state the user can fix: `nas` prints the message as one line and exits 2.
    Defined here, without torch, so that the command line reports one fast."""


class Interrupted(Exception):
    """A long run stopped by Ctrl-C or SIGTERM; the message says what was kept and how to resume
    (`nas` prints it and exits 130)."""
