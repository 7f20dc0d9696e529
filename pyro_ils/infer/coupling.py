r"""Guide sites drawn again, with the draw's noise, under another value of an earlier site.

The exact differences of :class:`~pyro_ils.TraceILSDiff_ELBO` change one routed site
:math:`y` to each alternative :math:`k` and evaluate the loss. In a guide whose later
site :math:`z` depends on :math:`y` (:math:`q(z \mid y)`, a structured guide), the
local expectation gradient needs :math:`g(k) = \mathbb{E}_{q(z \mid y = k)}[f(k,
z)]`; holding :math:`z` at its draw from :math:`q(z \mid y)` evaluates :math:`f` at a
:math:`z` of the wrong distribution, which biases the gradient. Here :math:`z` is
drawn again for each alternative, *coupled* to its draw: the same noise, pushed
through :math:`q(z \mid y = k)`, so that :math:`z_k \sim q(z \mid y = k)` exactly and
:math:`f(k, z_k)` is an unbiased estimate of :math:`g(k)`, with the variance of the
differences kept low by the shared noise (common random numbers):

* ``Normal`` (inside ``Independent``, expanded and masked wrappers):
  :math:`z_k = \mu_k + \sigma_k \epsilon` with :math:`\epsilon = (z - \mu) / \sigma`
  held fixed: :math:`z_k` keeps its path to the parameters of :math:`q(z \mid y = k)`
  (a reparameterized draw);
* ``Bernoulli``, ``Categorical`` and ``OneHotCategorical``: the inverse CDF of a
  uniform :math:`u` drawn from its conditional given the draw (:math:`u \sim
  U(F(z - 1), F(z))`, so :math:`u \sim U(0, 1)`): :math:`z_k = F_k^{-1}(u)`. This
  uses the random number generator.

Where the distribution is unchanged (the parameters are equal), the draw is kept.
Other distributions are held at their draw, as before (:func:`coupled` returns
``None``).

References:
    Titsias, M. K. and Lazaro-Gredilla, M. (2015). Local expectation gradients for
    black box variational inference. NeurIPS.

    Glasserman, P. and Yao, D. D. (1992). Some guidelines and guarantees for common
    random numbers. Management Science 38(6).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor

from pyro_ils.distributions.util import base_of

__all__ = ["coupled"]


def _uniform_given(low: Tensor, high: Tensor) -> Tensor:
    """``u ~ U(low, high)``, kept strictly inside the interval."""
    u = torch.rand(torch.broadcast_shapes(low.shape, high.shape), device=low.device)
    u = u.to(low.dtype).clamp(1e-6, 1 - 1e-6)
    return low + (high - low) * u


def _params(fn) -> tuple[Tensor, ...]:
    if isinstance(fn, dist.Normal):
        return fn.loc, fn.scale
    return (fn.probs,)


def _redrawn(old, new, value: Tensor) -> Tensor:
    if isinstance(new, dist.Normal):
        # The noise is data; the new value keeps the path to the new parameters.
        eps = ((value - old.loc) / old.scale).detach()
        redrawn = new.loc + new.scale * eps
        return torch.where((new.loc == old.loc) & (new.scale == old.scale), value, redrawn)
    value = value.detach().as_subclass(torch.Tensor)  # a discrete draw as plain data
    if isinstance(new, dist.Bernoulli):
        p_old, p_new = old.probs, new.probs
        zero, one = torch.zeros_like(p_old), torch.ones_like(p_old)
        u = _uniform_given(torch.where(value > 0, zero, p_old), torch.where(value > 0, p_old, one))
        return torch.where(p_new == p_old, value, (u < p_new).to(value.dtype))
    one_hot = isinstance(new, dist.OneHotCategorical)
    index = value.argmax(-1) if one_hot else value.long()
    num = old.probs.size(-1)
    probs_old = old.probs.expand(index.shape + (num,))
    high = probs_old.cumsum(-1).gather(-1, index.unsqueeze(-1))
    u = _uniform_given(high - probs_old.gather(-1, index.unsqueeze(-1)), high)
    redrawn = (new.probs.cumsum(-1) < u).sum(-1).clamp(max=num - 1)
    out = torch.where((new.probs == old.probs).all(-1), index, redrawn)
    return F.one_hot(out, num).to(value.dtype) if one_hot else out.to(value.dtype)


_COUPLED = (dist.Normal, dist.Bernoulli, dist.Categorical, dist.OneHotCategorical)


def coupled(drawn_fn, new_fn, value: Tensor) -> Tensor | None:
    """A value of ``new_fn`` coupled to ``value``, a draw of ``drawn_fn`` (see the
    module docstring), broadcast with ``new_fn``'s shape; ``value`` itself where the
    parameters are the same; ``None`` for a distribution that has no coupling here."""
    old, new = base_of(drawn_fn), base_of(new_fn)
    if type(old) is not type(new) or not isinstance(new, _COUPLED):
        return None
    shape = new_fn.batch_shape + new_fn.event_shape
    if all(
        a.shape == b.shape and torch.equal(a, b)
        for a, b in zip(_params(old), _params(new), strict=True)
    ):
        out = value  # unchanged: no noise is drawn
    else:
        out = _redrawn(old, new, value)
    return out.expand(torch.broadcast_shapes(out.shape, shape))
