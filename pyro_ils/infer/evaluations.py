r"""How many evaluations of the objective an ELBO makes per step, for comparisons at
equal cost (for example RLOO with as many samples as the exact-difference ELBO
evaluates: ``TraceRLOO_ELBO(num_samples=evaluations_per_step(elbo, model, guide,
...))``).

One *evaluation* is :math:`\log p(x, z) - \log q(z)` at one configuration :math:`z` of
all the latent sites, on the whole minibatch: one run of the model (and of the guide,
where the estimator needs its terms), whether the configurations are run one by one,
vectorized (``vectorize_particles``), or stacked along a dim of alternatives. Backward
passes, the mean-field check's extra guide run and learned networks are not counted.

* :class:`~pyro_ils.TraceILSDiff_ELBO` (and
  :class:`~pyro_ils.infer.trace_indecater_elbo.TraceIndeCateR_ELBO`): per particle, the
  draw plus every row of its run over the alternatives, :math:`1 + \sum_i M_i`, where a
  routed site :math:`i` with :math:`K_i` categories has :math:`M_i = C_i K_i` rows and
  :math:`C_i` is its number of coupled blocks (1 where its plates split its terms; one
  per element otherwise, ``.to_event`` elements included). The row of a block's drawn
  category repeats the draw but is run, so it is counted. The count is taken on a fresh
  draw of the traces (the random state is restored), since it can depend on the draw for
  a model with dynamic structure.
* :class:`~pyro_ils.infer.trace_rloo_elbo.TraceRLOO_ELBO`: ``num_samples``;
  :class:`~pyro_ils.infer.trace_disarm_elbo.TraceDisARM_ELBO`: ``2 * num_pairs``;
  :class:`~pyro_ils.infer.trace_muprop_elbo.TraceMuProp_ELBO`: 2 per particle;
  :class:`~pyro_ils.infer.trace_rebar_elbo.TraceREBAR_ELBO` and
  :class:`~pyro_ils.infer.trace_relax_elbo.TraceRELAX_ELBO`: 3 per particle;
  Pyro's ``Trace_ELBO``, ``TraceMeanField_ELBO`` and ``TraceGraph_ELBO``: 1 per particle;
  :class:`~pyro_ils.TraceILS_ELBO` and :class:`~pyro_ils.TraceGraphILS_ELBO` given an
  estimator or options (every routed site then gets a single-evaluation backward): 1
  per particle.
* The default ``TraceILS_ELBO()`` (and ``TraceGraphILS_ELBO()``): per particle, the draw
  plus the rows of the sites its per-site choice
  (:mod:`pyro_ils.infer.site_choice`) gave exact differences, :math:`1 + \sum_{i \in
  D} M_i`; the sites at the midpoint limit add nothing. Where the choice has not been
  made yet (no step taken), it is made first, on a draw whose alternatives are run
  without gradients (Pyro's random state restored), as the first step would make it.
  Where the ELBO keeps the midpoint limit on every site (score-function or enumerated
  sites, see :func:`~pyro_ils.infer.site_choice.blocking_sites`): 1 per particle.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.util import get_rng_state, set_rng_state

from pyro_ils.infer.default_choice_elbo import DefaultChoiceELBO
from pyro_ils.infer.trace_disarm_elbo import TraceDisARM_ELBO
from pyro_ils.infer.trace_ils_diff_elbo import TraceILSDiff_ELBO
from pyro_ils.infer.trace_ils_elbo import TraceILS_ELBO
from pyro_ils.infer.trace_muprop_elbo import TraceMuProp_ELBO
from pyro_ils.infer.trace_rebar_elbo import TraceREBAR_ELBO
from pyro_ils.infer.trace_rloo_elbo import TraceRLOO_ELBO
from pyro_ils.infer.tracegraph_ils_elbo import TraceGraphILS_ELBO

__all__ = ["evaluations_per_step"]

#: Evaluations per particle of the ELBOs whose count does not depend on the model.
_PER_PARTICLE: dict[type, int] = {
    TraceRLOO_ELBO: 1,
    TraceDisARM_ELBO: 2,
    TraceMuProp_ELBO: 2,
    TraceREBAR_ELBO: 3,  # and its subclass TraceRELAX_ELBO
}
#: Pyro's own single-evaluation ELBOs (matched by exact type: subclasses may add runs).
_PYRO_SINGLE = (Trace_ELBO, TraceMeanField_ELBO, TraceGraph_ELBO)


def evaluations_per_step(elbo: ELBO, model: Callable, guide: Callable, *args, **kwargs) -> int:
    """The number of objective evaluations one ``loss_and_grads`` of ``elbo`` makes on
    ``model`` and ``guide`` (called with ``args`` and ``kwargs``); see the module
    docstring for what is counted, per ELBO. ``TypeError`` for an ELBO it does not know.

    For :class:`~pyro_ils.TraceILSDiff_ELBO` and the default ILS ELBOs the model and
    guide are traced (one draw per particle, Pyro's random state restored afterwards);
    for the others the count follows from the ELBO's options alone."""
    if isinstance(elbo, TraceILS_ELBO | TraceGraphILS_ELBO) and elbo.max_alternatives > 0:
        inner = _default_elbo(elbo, model, guide, args, kwargs)
        if inner is None:  # the midpoint limit on every site
            return elbo.num_particles
        elbo = inner
    if isinstance(elbo, TraceILSDiff_ELBO):
        state = get_rng_state()
        try:
            return sum(
                1 + elbo.alternatives_per_draw(model, guide, *args, **kwargs)
                for _ in range(elbo.num_particles)
            )
        finally:
            set_rng_state(state)
    for cls, per_particle in _PER_PARTICLE.items():
        if isinstance(elbo, cls):
            return per_particle * elbo.num_particles
    if type(elbo) in _PYRO_SINGLE:
        return elbo.num_particles
    if isinstance(elbo, TraceILS_ELBO | TraceGraphILS_ELBO) and elbo.max_alternatives == 0:
        return elbo.num_particles  # every routed site: one backward on the one draw
    raise TypeError(f"evaluations_per_step does not know the cost of {type(elbo).__name__}")


def _default_elbo(elbo, model, guide, args, kwargs) -> DefaultChoiceELBO | None:
    """The ELBO that runs the default ``elbo``'s per-site choice on ``model`` and
    ``guide``, with that choice made (``None`` where every site keeps the midpoint
    limit). Pyro's random state is restored."""
    state = get_rng_state()
    try:
        inner = elbo._delegate(model, guide, args, kwargs)
        if inner is not None:
            inner.choose(model, guide, *args, **kwargs)
        return inner
    finally:
        set_rng_state(state)
