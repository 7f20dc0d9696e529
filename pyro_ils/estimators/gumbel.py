r"""Gumbel-max and logistic noise, unconditional and conditional on the discrete draw.

REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018) write a discrete
draw as a threshold of continuous noise and need that noise twice: the noise
:math:`z` that produced the draw :math:`b = H(z)`, and an independent draw
:math:`\tilde z \sim p(z \mid b)` from its law given :math:`b`.

**Categorical.** :math:`z_k = \ell_k + G_k`, :math:`G_k` iid standard Gumbel, and
:math:`b = \mathrm{onehot}(\arg\max_k z_k) \sim \mathrm{Categorical}(\mathrm{softmax}(\ell))`
(the Gumbel-max trick). Given :math:`b = e_j` the maximum :math:`z_j` is
Gumbel with location :math:`\log\sum_k e^{\ell_k}`, independent of :math:`j`, and
each other :math:`z_k` is Gumbel(:math:`\ell_k`) truncated to :math:`z_k < z_j`.
Inverting the truncated CDF :math:`\exp(-e^{-(x - \ell_k)}) / \exp(-e^{-(z_j - \ell_k)})`
at a uniform :math:`v_k` gives

.. math::

    \tilde z_j = \log\sum_k e^{\ell_k} - \log(-\log v_j), \qquad
    \tilde z_k = -\log\bigl(e^{-\ell_k}(-\log v_k) + e^{-\tilde z_j}\bigr)\quad (k \ne j)

(the "top-down" construction; Maddison, Tarlow and Minka 2014, "A* sampling";
Tucker et al. 2017, Appendix C).

**Bernoulli.** :math:`z = \ell + \log u - \log(1 - u)` (logistic noise,
:math:`u` uniform), :math:`b = H(z) = 1[z > 0] \sim \mathrm{Bernoulli}(\sigma(\ell))`.
Given :math:`b`, :math:`u` is uniform on :math:`(1 - p, 1)` (:math:`b = 1`) or
:math:`(0, 1 - p)` (:math:`b = 0`), :math:`p = \sigma(\ell)`; with :math:`v` uniform,
:math:`u' = (1 - p) + v p` or :math:`u' = v (1 - p)` and
:math:`\tilde z = \ell + \log u' - \log(1 - u')`, computed in log space.

All functions are differentiable with respect to ``logits`` (for fixed uniforms),
which is the conditional reparameterization REBAR uses, and follow the dtype and
device of ``logits``. The relaxations are
:math:`\sigma_\lambda(z) = \mathrm{softmax}(z / \lambda)` and
:math:`\mathrm{sigmoid}(z / \lambda)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pyro_ils.ops.softmax import softmax

__all__ = [
    "uniform_like",
    "gumbel_sample",
    "gumbel_given_onehot",
    "logistic_sample",
    "logistic_given_bernoulli",
    "relax_onehot",
    "relax_bernoulli",
]


def uniform_like(x: Tensor) -> Tensor:
    """Uniform draws on the open interval (0, 1), shape/dtype/device of ``x``."""
    tiny = torch.finfo(x.dtype).tiny
    u = torch.rand(x.shape, dtype=x.dtype, device=x.device)
    return u.clamp(min=tiny, max=1.0 - torch.finfo(x.dtype).eps)


def gumbel_sample(logits: Tensor, u: Tensor | None = None) -> Tensor:
    r""":math:`z = \ell - \log(-\log u)`; ``argmax(z, -1)`` is Categorical(softmax(logits))."""
    u = uniform_like(logits) if u is None else u
    return logits - torch.log(-torch.log(u))


def gumbel_given_onehot(logits: Tensor, onehot: Tensor, v: Tensor | None = None) -> Tensor:
    r"""A draw of the Gumbel-max noise :math:`z = \ell + G` given that its argmax is
    the one-hot ``onehot`` (broadcast against ``logits``; last dim = categories)."""
    shape = torch.broadcast_shapes(logits.shape, onehot.shape)
    logits = logits.expand(shape)
    onehot = onehot.expand(shape).to(logits.dtype)
    v = uniform_like(logits) if v is None else v
    neg_log_v = -torch.log(v)
    top = torch.logsumexp(logits, -1, keepdim=True) - torch.log((neg_log_v * onehot).sum(-1, True))
    finite = torch.where(torch.isfinite(logits), logits, torch.finfo(logits.dtype).min)
    others = -torch.logaddexp(torch.log(neg_log_v) - finite, -top)
    return torch.where(onehot > 0, top.expand(shape), others)


def logistic_sample(logits: Tensor, u: Tensor | None = None) -> Tensor:
    r""":math:`z = \ell + \log u - \log(1 - u)`; ``z > 0`` is Bernoulli(sigmoid(logits))."""
    u = uniform_like(logits) if u is None else u
    return logits + torch.log(u) - torch.log1p(-u)


def logistic_given_bernoulli(logits: Tensor, value: Tensor, v: Tensor | None = None) -> Tensor:
    r"""A draw of the logistic noise :math:`z = \ell + L` given :math:`1[z > 0] = ` ``value``
    (0/1, broadcast against ``logits``)."""
    shape = torch.broadcast_shapes(logits.shape, value.shape)
    logits = logits.expand(shape)
    one = value.expand(shape) > 0.5
    v = uniform_like(logits) if v is None else v
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)  # log p, log(1 - p)
    log_v, log_1mv = torch.log(v), torch.log1p(-v)
    # b = 1: u' = (1 - p) + v p,  1 - u' = (1 - v) p
    log_u1 = torch.logaddexp(log_q, log_v + log_p)
    log_1mu1 = log_1mv + log_p
    # b = 0: u' = v (1 - p),     1 - u' = p + (1 - v)(1 - p)
    log_u0 = log_v + log_q
    log_1mu0 = torch.logaddexp(log_p, log_1mv + log_q)
    log_u = torch.where(one, log_u1, log_u0)
    log_1mu = torch.where(one, log_1mu1, log_1mu0)
    return logits + log_u - log_1mu


def relax_onehot(z: Tensor, temperature: Tensor | float) -> Tensor:
    r""":math:`\sigma_\lambda(z) = \mathrm{softmax}(z / \lambda)` over the last dim."""
    return softmax(z / temperature)


def relax_bernoulli(z: Tensor, temperature: Tensor | float) -> Tensor:
    r""":math:`\sigma_\lambda(z) = \mathrm{sigmoid}(z / \lambda)`."""
    return torch.sigmoid(z / temperature)
