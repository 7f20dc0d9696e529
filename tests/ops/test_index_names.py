"""The neutral names of the draw tensors and the drop warning, and their former ILS names."""

import pytest
import torch

import pyro_ils
from pyro_ils import debug
from pyro_ils.estimators import STCategorical
from pyro_ils.ops import index_tensor as ops_index_tensor


def test_former_names_are_the_new_classes():
    assert pyro_ils.ILSIndexTensor is pyro_ils.SurrogateIndexTensor
    assert pyro_ils.ILSOneHotTensor is pyro_ils.SurrogateOneHotTensor
    assert pyro_ils.ILSGradientDropWarning is pyro_ils.GradientDropWarning
    assert debug.ILSGradientDropWarning is debug.GradientDropWarning
    assert ops_index_tensor.SurrogateIndexTensor is pyro_ils.SurrogateIndexTensor
    assert ops_index_tensor.SurrogateOneHotTensor is pyro_ils.SurrogateOneHotTensor
    for name in ("SurrogateIndexTensor", "GradientDropWarning"):
        assert name in pyro_ils.__all__
    # former names and internals stay importable without being listed
    for name in ("ILSIndexTensor", "ILSOneHotTensor", "SurrogateOneHotTensor", "TARGETS"):
        assert name not in pyro_ils.__all__ and hasattr(pyro_ils, name)


def test_straight_through_draw_is_a_surrogate_index_tensor():
    logits = torch.randn(4, 3, requires_grad=True)
    z = STCategorical(logits=logits).rsample()
    assert type(z) is pyro_ils.SurrogateIndexTensor
    assert isinstance(z, pyro_ils.ILSIndexTensor)
    assert z.dtype == torch.long and z.onehot.requires_grad
    assert isinstance(torch.nn.functional.one_hot(z, 3), pyro_ils.SurrogateOneHotTensor)


def test_drop_warning_is_issued_under_both_names():
    z = STCategorical(logits=torch.randn(3, requires_grad=True)).rsample()
    for category in (pyro_ils.GradientDropWarning, pyro_ils.ILSGradientDropWarning):
        with pytest.warns(category, match="carries no ILS gradient"):
            with pyro_ils.report_dropped_gradients(warn=True):
                z.float()
