"""Which frame a dropped gradient is reported at: the package's own frames are
skipped wherever in ``pyro_ils/`` they are, not only those in ``pyro_ils/ops/``."""

import os

import torch

import pyro_ils
from pyro_ils import ILSCategorical, report_dropped_gradients


def _package_function(relpath: str):
    """A function that reads a draw's value, compiled as if it were in ``pyro_ils/relpath``."""
    path = os.path.join(os.path.dirname(pyro_ils.__file__), relpath)
    namespace = {}
    exec(compile("def read(z):\n    return z.float()\n", path, "exec"), namespace)
    return namespace["read"]


def test_package_frames_are_skipped_up_to_the_calling_user_code():
    z = ILSCategorical(logits=torch.zeros(4, 3, requires_grad=True)).rsample()
    for relpath in ("surrogate.py", os.path.join("ops", "index_dispatch.py")):
        read = _package_function(relpath)
        with report_dropped_gradients() as report:
            read(z)
        (op,) = report.operations
        assert op.startswith("float at test_dropped_gradients.py:"), (relpath, op)
