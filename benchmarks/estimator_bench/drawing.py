"""How an estimator's sites are drawn: the messenger that swaps the guide's (and, for
the relaxed-density path, the model's) ``OneHotCategorical`` sites, the distributions
it installs, the NVIL baseline, and :func:`prepare`, which builds the ``(model, guide,
elbo)`` of an :class:`~.registry.Estimator` on a task."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.infer import config_enumerate
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample


class SiteSwap(Messenger):
    """Replace the ``OneHotCategorical`` of every latent sample site, add ``infer`` keys.

    ``make(fn)`` returns the new distribution (or ``None`` to keep ``fn``);
    ``infer`` is merged into the site's ``infer`` dict (a callable gets the site's
    message). Observed, conditioned and subsample sites are left alone.
    """

    def __init__(self, make=None, infer=None):
        super().__init__()
        self.make, self.infer = make, infer

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None or isinstance(msg["fn"], _Subsample):
            return
        if self.make is not None and type(msg["fn"]) is dist.OneHotCategorical:
            new = self.make(msg["fn"])
            if new is not None:
                msg["fn"] = new
        if self.infer is not None:
            msg["infer"].update(self.infer(msg) if callable(self.infer) else self.infer)


class GumbelSoftmaxOneHot(dist.OneHotCategorical):
    """Gumbel-Softmax with a relaxed forward and the discrete KL.

    ``rsample`` returns the relaxed (Concrete) draw; the class is a
    ``OneHotCategorical``, so ``TraceMeanField_ELBO`` takes ``KL(q || p)`` of the
    categorical analytically instead of a ratio of relaxed densities.
    """

    has_rsample = True

    def __init__(self, temperature, logits, validate_args=False):
        super().__init__(logits=logits, validate_args=validate_args)
        self.temperature = temperature

    def expand(self, batch_shape, _instance=None):
        new = GumbelSoftmaxOneHot(self.temperature, self.logits.expand(*batch_shape, -1))
        return new

    def rsample(self, sample_shape=torch.Size()):
        relaxed = dist.RelaxedOneHotCategorical(
            torch.as_tensor(self.temperature, dtype=self.logits.dtype, device=self.logits.device),
            logits=self.logits,
            validate_args=False,
        )
        return relaxed.rsample(sample_shape)


def _temp(fn, hp):
    return torch.tensor(float(hp["temperature"]), dtype=fn.logits.dtype, device=fn.logits.device)


def _relaxed(fn, hp):
    return dist.RelaxedOneHotCategorical(_temp(fn, hp), logits=fn.logits, validate_args=False)


def _st_gumbel_pyro(fn, hp):
    return dist.RelaxedOneHotCategoricalStraightThrough(
        _temp(fn, hp), logits=fn.logits, validate_args=False
    )


def _gumbel_softmax_kl(fn, hp):
    return GumbelSoftmaxOneHot(float(hp["temperature"]), fn.logits)


class NVILBaseline(nn.Module):
    """A learned, input-dependent baseline (Mnih & Gregor 2014): one hidden layer."""

    def __init__(self, dim, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def prepare(est, task, hp: dict):
    """``(model, guide, elbo)`` of estimator ``est`` with hyper-parameters ``hp`` on ``task``."""
    model, guide = task.model, task.guide
    if est.model_dist is not None:
        model = SiteSwap(lambda fn: est.model_dist(fn, hp))(model)
    make = None if est.guide_dist is None else (lambda fn: est.guide_dist(fn, hp))
    if est.site_infer == "enumerate":
        guide = config_enumerate(guide, "parallel")
    elif est.site_infer == "avg_baseline":
        guide = SiteSwap(make, {"baseline": {"use_decaying_avg_baseline": True}})(guide)
        make = None
    elif est.site_infer == "nvil":
        guide = _nvil_guide(task, guide, make)
        make = None
    if make is not None:
        guide = SiteSwap(make)(guide)
    return model, guide, est.elbo(hp, task)


def _nvil_guide(task, guide, make):
    net = NVILBaseline(task.baseline_dim).to(task.device)

    def nvil_guide(*args, **kwargs):
        pyro.module("nvil_baseline", net)
        context = task.baseline_input(*args, **kwargs)
        options = {"baseline": {"nn_baseline": net, "nn_baseline_input": context}}
        with SiteSwap(make, options):
            return guide(*args, **kwargs)

    return nvil_guide
