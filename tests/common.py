"""Oracles and statistical checks shared by the test modules.

Each oracle is an independent statement of a formula in plain autograd (or plain
arithmetic), written from the paper, not from the package's code:

* :func:`oracle_project`: the Euclidean projection onto the simplex, by bisection;
* :func:`st_oracle`, :func:`paper_reinmax`, :func:`st_gumbel_oracle`: the
  straight-through, ReinMax (Liu et al. 2023, Algorithm 2) and ST-Gumbel estimators as
  stop-gradient expressions whose autograd gives their backward;
* :func:`autograd_grad`: the gradient for ``logits`` of ``<out, g>``.

:func:`bias_outliers` is the normal test that a Monte Carlo mean matches an exact
gradient (Bonferroni over the coordinates, false-alarm rate :data:`ALPHA`).
"""

from __future__ import annotations

import math

import torch
from scipy.stats import norm

#: False-alarm rate of each statistical test of an unbiased estimator.
ALPHA = 1e-3


def oracle_project(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of the last dim onto the simplex by bisection on tau
    (float64, CPU). ``-inf`` entries get exactly zero mass (``max(-inf - tau, 0) = 0``)."""
    v = v.detach().to("cpu", torch.float64)
    top = v.amax(-1, keepdim=True)
    lo, hi = top - 1.0, top.clone()
    for _ in range(100):
        mid = (lo + hi) / 2
        over = (v - mid).clamp(min=0).sum(-1, keepdim=True) > 1.0
        lo = torch.where(over, mid, lo)
        hi = torch.where(over, hi, mid)
    return (v - (lo + hi) / 2).clamp(min=0)


def autograd_grad(out: torch.Tensor, logits: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``d <out, g> / d logits`` by autograd."""
    (grad,) = torch.autograd.grad((out * g).sum(), logits)
    return grad


def st_oracle(logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Straight-through (Bengio et al. 2013): ``pi - sg(pi) + z``."""
    pi = logits.softmax(-1)
    return pi - pi.detach() + onehot


def paper_reinmax(logits: torch.Tensor, onehot: torch.Tensor, tau: float) -> torch.Tensor:
    """Algorithm 2 of Liu et al. (2023), line by line, in plain autograd."""
    pi_0 = torch.softmax(logits, -1)
    pi_1 = (onehot + torch.softmax(logits / tau, -1)) / 2
    shift = (torch.log(pi_1) - logits).detach()
    # (At -inf logits the shift is -inf - -inf = NaN; any finite shift keeps pi_1 = 0 there.)
    shift = shift.masked_fill(logits.detach() == -torch.inf, 0.0)
    pi_1 = torch.softmax(shift + logits, -1)
    pi_2 = 2 * pi_1 - pi_0 / 2
    return pi_2 - pi_2.detach() + onehot


def st_gumbel_oracle(
    logits: torch.Tensor, onehot: torch.Tensor, perturbed: torch.Tensor, tau: float
) -> torch.Tensor:
    """ST-Gumbel (Jang et al. 2017): ``y - sg(y) + z`` with
    ``y = softmax((logits + sg(perturbed - logits)) / tau)``."""
    y = ((logits + (perturbed - logits).detach()) / tau).softmax(-1)
    return y - y.detach() + onehot


def bias_outliers(draws, exact, alpha=ALPHA):
    """Coordinates where the mean of the draws is off the exact gradient by more
    than the Bonferroni-corrected normal tolerance (empty if consistent). The
    normal approximation needs many nonzero draws per coordinate; fewer than 30
    is a flaw of the test's design and fails loudly."""
    n, p = draws.shape
    nonzero = (draws != 0).sum(0)
    assert nonzero.min() >= 30, f"too few nonzero draws for a normal test: {nonzero.tolist()}"
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    tol = norm.isf(alpha / (2 * p)) * se + 1e-8 * (1 + exact.abs())
    bad = ((mean - exact).abs() > tol).nonzero().flatten().tolist()
    return [(i, mean[i].item(), exact[i].item(), se[i].item()) for i in bad]
