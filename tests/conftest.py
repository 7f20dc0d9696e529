"""Shared test parametrization and fixtures.

``devices`` is the list to parametrize device-dependent tests over:
``@pytest.mark.parametrize("device", devices)``. The ``"cuda"`` entry carries
the ``cuda`` marker and is skipped where no CUDA device is present.

``clean_param_store`` clears Pyro's param store before and after a test; a module
uses it for every test with ``pytestmark = pytest.mark.usefixtures("clean_param_store")``.
"""

import pyro
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


@pytest.fixture
def clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
