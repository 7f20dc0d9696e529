r"""ILS with exact discrete differences in place of the first-order signal.

ILS steps the target with ``g = dL/dz``, the first-order model of how the loss
changes when the draw moves to another category. Where the model can be run on
all ``K`` alternatives of a site at once (as parallel enumeration does), the
change itself can be used instead:

.. math::

    d_k = L(z_{-i}, z_i = k) - L(z_{-i}, z_i), \qquad k = 1, \dots, K,

for each draw :math:`z_i` of a site, with every other draw :math:`z_{-i}` held at
its value and :math:`L = -(\log p(x, z) - \log q(z))` the negative ELBO
integrand, each term scaled and masked as Pyro scales it. Divided by the draw's
weight :math:`w_i` (its scale: plate subsampling, ``poutine.scale``; its mask),
:math:`d` enters the ILS target and backward unchanged:

.. math::

    \pi_D = h(z - c\, d / w), \qquad
    \nabla_{\mathrm{logits}} = \frac{w}{c}\,(\pi - \pi_D),

the gradient of :math:`\frac{w}{c} \mathrm{KL}(\pi_D \| \pi)` with the target
held fixed. Unlike :class:`~pyro_ils.TraceILS_ELBO`, the ILS backward is divided
by the step: ``c`` sets how far the target moves (a trust region on the
simplex), not the size of the gradient, which stays on the scale of the loss
and of the other terms (an analytic KL, the model's parameters).

With the entropic map (``projection="mirror"``, the default here),
:math:`\pi_D \propto \pi\, e^{-c\, d / w}`:

* for small ``c``, :math:`\frac{w}{c} (\pi - \pi_D) \to \pi \odot (d - \langle
  \pi, d \rangle)`: the *local expectation gradient* (Titsias and
  Lazaro-Gredilla, 2015), which is unbiased for a guide whose sites are
  independent given their parents (mean field), and exact when a site is the
  only draw its terms depend on;
* at ``c = 1`` and without analytic KL, :math:`\pi\, e^{-d / w} \propto p(x,
  z_i = k, z_{-i}) / q(z_{-i} \mid z_i = k)`: for a mean-field guide the target
  is the exact conditional posterior of the draw, :math:`p(z_i \mid x, z_{-i})`.

**The limit** ``step_size=0`` (with ``"mirror"``) is that small-step gradient
itself, :math:`w\, \pi \odot (g - \langle \pi, g \rangle)` with :math:`g = d / w`:
no step to choose, and, like every other parameter's gradient, multiplied by
exactly the factor that multiplies the loss.

**Rao-Blackwellized model terms** (``rao_blackwellize=True``). The alternatives
are evaluated anyway; every model term :math:`\ell` that depends on the site is
then differentiated (in the model's parameters and anything else but ``q``) as its
average over them,

.. math::

    \bar\ell = \frac1C \sum_{c=1}^{C} \sum_{k=1}^{K} q(z_c = k)\,
    \ell(z_{-c}, z_c = k),

with ``q`` held fixed and :math:`c` running over the site's coupled blocks (a
block is changed as one draw; ``C = 1`` when the site's plates split its terms).
Each inner sum is the expectation of :math:`\ell` over the block's draw given the
others, so :math:`\bar\ell` has the expectation of :math:`\ell` and less
variance; a term that depends on several routed sites is averaged over each of them
and the averages are averaged. For a draw that is the only one its terms depend on
(one latent per data point, as in a mixture) and the limit ``step_size=0``, every
gradient is then the exact (enumerated) gradient, at ``K + 1`` model runs per step
where ``TraceEnum_ELBO`` needs ``K``. It costs the backward pass through the
alternatives' runs, which the differences alone do not need.

**Cost.** One extra run of the guide and the model per step, on the
alternatives of every routed site stacked along a new dimension left of every
plate (a site's own rows hold its alternatives while the other sites keep their
draws): ``M`` rows per site, ``M = K`` where
every term that depends on the site lies in all of the site's plates (for
example a per-data-point latent with its own likelihood), and ``M = C K`` where
``C`` is the number of the site's elements that the terms couple (for example
``L`` latents of one image in a ``latents`` plate, or ``.to_event`` dims: each
is changed on its own). The model and guide must broadcast over that new
dimension, as they must for ``TraceEnum_ELBO``'s parallel enumeration. More than
``chunk_size`` rows are run in chunks, the model's under activation checkpointing, so
that the memory of the model's run stays that of one chunk
(:mod:`pyro_ils.alternatives`).

**Which terms couple.** A plate of the site is treated as splitting its terms
when every site after it (in the guide, and in the model after the model's site
of the same name) is inside that plate; otherwise the plate's elements are
changed one at a time. Batch dims without a plate and ``.to_event`` dims are
always changed one at a time.

**Structured guides.** A later guide site whose distribution changes with a routed
site's alternative (:math:`q(z \mid y)`) is drawn again in that alternative's rows,
coupled to its draw (:mod:`pyro_ils.coupling`: the same noise, so :math:`z_k \sim
q(z \mid y = k)`), for ``Normal``, ``Bernoulli``, ``Categorical`` and
``OneHotCategorical`` sites: each :math:`d_k` is then an unbiased estimate of the
expected loss under the alternative, and the gradient the local expectation gradient
of the ELBO. A reparameterized redrawn value keeps its path to the guide's parameters
into the Rao-Blackwellized model terms, so the guide's run over the alternatives keeps
its graph (it is not checkpointed). Later sites of other distributions are held at
their draws (their ``log q`` re-evaluated under each alternative), which is not the
local expectation gradient for them.

**Scope.** Continuous reparameterized sites, and discrete sites that are not routed
(other distributions, ``infer={"ils": False}``, enumerated sites), are handled as
:class:`~pyro.infer.Trace_ELBO` handles them.
A plate that subsamples at random (``subsample_size``) keeps the draw's minibatch
in the run over the alternatives.

The implementation is in ``pyro_ils.infer``: ``ils_diff_plan`` (the routed sites and
their alternatives), ``ils_diff_alternatives`` (the run over them and the differences),
``ils_diff_surrogate`` (the targets and the surrogate loss) and ``trace_ils_diff_elbo``
(the ELBO); this module re-exports it.
"""

from __future__ import annotations

# The private names are imported from here by pyro_ils.site_choice.
from .infer.ils_diff_plan import _max_plate_nesting as _max_plate_nesting
from .infer.ils_diff_plan import _PlainDrawMessenger as _PlainDrawMessenger
from .infer.ils_diff_plan import _Plan as _Plan
from .infer.trace_ils_diff_elbo import TraceILSDiff_ELBO

__all__ = ["TraceILSDiff_ELBO"]
