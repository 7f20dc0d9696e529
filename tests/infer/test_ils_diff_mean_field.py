"""``TraceILSDiff_ELBO(mean_field=True)`` on the guide of the issue report (an MLP
encoder and one ``OneHotCategorical(...).to_event(1)`` site in a data plate), and its
error where the guide draws randomness outside its sample sites."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_ils import TraceILSDiff_ELBO

LATENTS, CATEGORIES, PIXELS = 4, 5, 12


def make(binarize_in_guide: bool):
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(PIXELS, 16), nn.ReLU(), nn.Linear(16, LATENTS * CATEGORIES))
    decoder = nn.Sequential(nn.Linear(LATENTS * CATEGORIES, 16), nn.ReLU(), nn.Linear(16, PIXELS))
    prior = torch.zeros(LATENTS, CATEGORIES)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior).to_event(1))
            logits = decoder(z.reshape(z.shape[:-2] + (-1,)))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=(x > 0.5).float())

    def guide(x):
        pyro.module("encoder", encoder)
        if binarize_in_guide:
            x = torch.bernoulli(x)  # dynamic binarization: randomness outside the sites
        with pyro.plate("data", len(x)):
            logits = encoder(x).reshape(len(x), LATENTS, CATEGORIES)
            pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))

    return model, guide


X = torch.rand(7, PIXELS)


def test_a_mean_field_mlp_guide_is_accepted_and_gives_the_full_runs_gradient():
    grads = []
    for mean_field in (False, True):
        model, guide = make(binarize_in_guide=False)  # the same initial weights
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        elbo = TraceILSDiff_ELBO(mean_field=mean_field)
        params = pyro.get_param_store()
        for _ in range(2):  # the first step checks the guide; the second skips its run
            for name in params.keys():
                params[name].unconstrained().grad = None
            elbo.loss_and_grads(model, guide, X)
        grads.append({n: params[n].unconstrained().grad.clone() for n in params.keys()})
        assert not mean_field or elbo._mean_field_checked
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name])


def test_randomness_outside_the_sample_sites_is_named_in_the_error():
    model, guide = make(binarize_in_guide=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pytest.raises(ValueError, match="randomness outside its sample sites"):
        TraceILSDiff_ELBO(mean_field=True).loss_and_grads(model, guide, X)
