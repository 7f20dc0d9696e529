"""Shared test parametrization.

``devices`` is the list to parametrize device-dependent tests over:
``@pytest.mark.parametrize("device", devices)``. The ``"cuda"`` entry carries
the ``cuda`` marker and is skipped where no CUDA device is present.
"""

import pytest
import torch

devices = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
        ],
    ),
]
