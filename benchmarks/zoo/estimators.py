"""The estimators of the zoo, each swapped in the way a user would: the ELBO, or the
guide site's distribution class (the peers).

A task's guide draws its discrete site(s) with ``estimator.site_dist(**params)`` and
adds ``estimator.site_infer`` to the site's ``infer``; everything else in the model
and the guide is as the task's source writes it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.util import get_rng_state, set_rng_state

from pyro_ils import TraceILS_ELBO, TraceILSDiff_ELBO
from pyro_ils.distributions import (
    GSTBernoulli,
    GSTCategorical,
    GSTOneHotCategorical,
    GumbelRaoBernoulli,
    GumbelRaoCategorical,
    GumbelRaoOneHotCategorical,
    ReinMaxCategorical,
    ReinMaxOneHotCategorical,
    STGumbelCategorical,
    STGumbelOneHotCategorical,
)
from pyro_ils.infer import (
    TraceDisARM_ELBO,
    TraceIndeCateR_ELBO,
    TraceRLOO_ELBO,
    evaluations_per_step,
)

from .reinmax_official import OfficialReinMaxOneHotCategorical

#: The one-hot version of each peer's (index-valued) site class (the official
#: ReinMax adapter is one-hot only).
_ONE_HOT = {
    ReinMaxCategorical: ReinMaxOneHotCategorical,
    STGumbelCategorical: STGumbelOneHotCategorical,
    GumbelRaoCategorical: GumbelRaoOneHotCategorical,
    GSTCategorical: GSTOneHotCategorical,
    OfficialReinMaxOneHotCategorical: OfficialReinMaxOneHotCategorical,
}
#: The Bernoulli version, where ``pyro_ils.distributions`` has one.
_BERNOULLI = {GumbelRaoCategorical: GumbelRaoBernoulli, GSTCategorical: GSTBernoulli}


@dataclass
class Estimator:
    name: str
    label: str
    #: what the estimator is in the literature (for the docs pages)
    about: str
    make_loss: object
    site_class: object = None
    temperature: float | None = None
    site_infer: dict = field(default_factory=dict)
    #: the swapped class's other options (``num_samples``, ``kappa``)
    site_kwargs: dict = field(default_factory=dict)
    #: only where the guide's discrete sites can be enumerated
    needs_enumeration: bool = False

    def loss(self, task):
        return self.make_loss(task)

    def site_dist(self, cls):
        """The distribution class the guide draws a discrete site with: ``cls`` (the
        task's own) unless the estimator swaps it."""
        if self.site_class is None:
            return cls
        return functools.partial(self.site_class, temperature=self.temperature, **self.site_kwargs)

    def one_hot(self) -> Estimator:
        """The estimator for a ``OneHotCategorical`` site: a peer's class swapped for
        its one-hot version, as a user would."""
        return self.for_site(dist.OneHotCategorical)

    def for_site(self, cls) -> Estimator:
        """The estimator for a site of class ``cls`` (``Categorical``,
        ``OneHotCategorical`` or ``Bernoulli``): a peer's class swapped for its version
        of that kind, as a user would; ``ValueError`` where it has none."""
        if self.site_class is None or cls is dist.Categorical:
            return self
        versions = {dist.OneHotCategorical: _ONE_HOT, dist.Bernoulli: _BERNOULLI}.get(cls, {})
        if self.site_class not in versions:
            raise ValueError(f"{self.label} has no {cls.__name__} version")
        return dataclasses.replace(self, site_class=versions[self.site_class])

    def with_temperature(self, temperature: float) -> Estimator:
        return dataclasses.replace(self, temperature=temperature)


def _nesting(task) -> int:
    return task.max_plate_nesting


#: The most samples ``rloo_matched`` takes: at most this many evaluations per step.
RLOO_CAP = 64


def probe_count(task, estimator: Estimator, elbo) -> int:
    """``evaluations_per_step(elbo, ...)`` on one minibatch of ``task`` reset for
    ``estimator``; ``TypeError`` where that ELBO's count is not known.

    Counted on a shallow copy of the task, reset from the current random state, which
    is restored afterwards, and in a scope of the parameter store: a run's own
    initialization, minibatches and draws are those it would have without the count."""
    state = get_rng_state()
    try:
        with pyro.get_param_store().scope():
            probe = copy.copy(task)
            probe.reset(estimator)
            return evaluations_per_step(elbo, probe.model, probe.guide, *probe.batch())
    finally:
        set_rng_state(state)


def matched_samples(task) -> int:
    """The RLOO samples matched to the exact differences' cost on ``task``:
    ``evaluations_per_step(TraceILSDiff_ELBO(), ...)`` on one minibatch (the draw plus
    its alternatives, :func:`probe_count`), capped at :data:`RLOO_CAP` (and at least 2)."""
    elbo = TraceILSDiff_ELBO(max_plate_nesting=_nesting(task))
    return max(2, min(probe_count(task, ESTIMATORS["ils_diff"], elbo), RLOO_CAP))


def evaluations(task, estimator: Estimator, loss) -> int | None:
    """Objective evaluations per step of ``loss`` (``estimator``'s ELBO) on ``task``,
    for comparisons at equal evaluations (:func:`probe_count`); ``None`` where they are
    not known. The default ``TraceILS_ELBO()`` counts the draw plus the alternatives of
    the sites its per-site choice gave exact differences."""
    try:
        return probe_count(task, estimator, loss)
    except TypeError:
        return None


ESTIMATORS = {
    e.name: e
    for e in [
        Estimator(
            "trace",
            "Trace_ELBO",
            "the score-function (REINFORCE) estimator, Pyro's default for a "
            "non-reparameterizable guide site (Williams 1992)",
            lambda task: Trace_ELBO(),
        ),
        Estimator(
            "tracegraph",
            "TraceGraph_ELBO",
            "the score function with Rao-Blackwellization over the dependency graph "
            "and the baselines the source uses (NVIL-style, Mnih and Gregor 2014)",
            lambda task: TraceGraph_ELBO(),
        ),
        Estimator(
            "enum",
            "TraceEnum_ELBO",
            "exact enumeration of the discrete sites: the exact gradient in them (the referee)",
            lambda task: TraceEnum_ELBO(max_plate_nesting=_nesting(task)),
            site_infer={"enumerate": "parallel"},
            needs_enumeration=True,
        ),
        Estimator(
            "ils_default",
            "TraceILS_ELBO()",
            "the plugin's default: per site, exact differences over the site's "
            "alternatives where it has at most 20 and the model broadcasts over them "
            "(then it is TraceILSDiff_ELBO(): the local expectation gradient, Titsias "
            "and Lázaro-Gredilla 2015), the midpoint limit otherwise (ReinMax's "
            "estimator, Liu et al. 2023, at the default temperature), each with the "
            "analytic KL where the prior has one (pyro_ils.infer.site_choice)",
            lambda task: TraceILS_ELBO(),
        ),
        Estimator(
            "ils_midpoint",
            "TraceILS_ELBO(projection='midpoint')",
            "the single-evaluation member on every site (the previous default): the ILS "
            "second-order (midpoint) target in its small-step limit, which is ReinMax's "
            "estimator at temperature 1 (Liu et al. 2023)",
            lambda task: TraceILS_ELBO(projection="midpoint"),
        ),
        Estimator(
            "ils_original",
            "TraceILS_ELBO(1, euclidean)",
            "ILS as proposed (2019): a step of size 1 from the drawn vertex, projected "
            "onto the simplex (the previous default)",
            lambda task: TraceILS_ELBO(step_size=1.0, projection="euclidean"),
        ),
        Estimator(
            "ils_diff",
            "TraceILSDiff_ELBO()",
            "exact differences over each draw's alternatives at step 0, "
            "Rao-Blackwellized: the local expectation gradient (Titsias and "
            "Lázaro-Gredilla 2015), of the IndeCateR family (De Smet et al. 2023)",
            lambda task: TraceILSDiff_ELBO(max_plate_nesting=_nesting(task)),
        ),
        Estimator(
            "reinmax",
            "ReinMax (analytic KL)",
            "ReinMax (Liu et al. 2023), the guide site's class swapped for "
            "ReinMaxCategorical, with TraceMeanField_ELBO's analytic KLs",
            lambda task: TraceMeanField_ELBO(),
            site_class=ReinMaxCategorical,
            temperature=1.0,
        ),
        Estimator(
            "st_gumbel",
            "ST-Gumbel (analytic KL)",
            "straight-through Gumbel-Softmax (Jang et al. 2017), the guide site's "
            "class swapped for STGumbelCategorical, with TraceMeanField_ELBO's "
            "analytic KLs",
            lambda task: TraceMeanField_ELBO(),
            site_class=STGumbelCategorical,
            temperature=1.0,
        ),
        Estimator(
            "gumbel_rao",
            "Gumbel-Rao (analytic KL)",
            "Gumbel-Rao (Paulus et al. 2021): straight-through Gumbel-Softmax "
            "Rao-Blackwellized over the Gumbel noise given the draw, 10 noise draws per "
            "draw; the guide site's class swapped for GumbelRaoCategorical, with "
            "TraceMeanField_ELBO's analytic KLs",
            lambda task: TraceMeanField_ELBO(),
            site_class=GumbelRaoCategorical,
            temperature=1.0,
            site_kwargs={"num_samples": 10},
        ),
        Estimator(
            "gst",
            "GST-1.0 (analytic KL)",
            "gapped straight-through (Fan et al. 2022), the gap kappa = 1.0: the "
            "relaxation at deterministically perturbed logits; the guide site's class "
            "swapped for GSTCategorical, with TraceMeanField_ELBO's analytic KLs",
            lambda task: TraceMeanField_ELBO(),
            site_class=GSTCategorical,
            temperature=1.0,
            site_kwargs={"kappa": 1.0},
        ),
        Estimator(
            "reinmax_official",
            "ReinMax, official package (analytic KL)",
            "ReinMax as its authors' package computes it (reinmax 0.1.0, Liu et al. "
            "2023): the guide site's class swapped for a OneHotCategorical whose "
            "rsample is reinmax.reinmax's sample (benchmarks/zoo/reinmax_official.py), "
            "with TraceMeanField_ELBO's analytic KLs; the same gradient as the plugin's "
            "ReinMax at a draw",
            lambda task: TraceMeanField_ELBO(),
            site_class=OfficialReinMaxOneHotCategorical,
            temperature=1.0,
        ),
        Estimator(
            "indecater",
            "TraceIndeCateR_ELBO()",
            "IndeCateR (De Smet et al. 2023), the CatLog-derivative trick: per draw, "
            "every independent categorical dimension summed exactly over its "
            "categories with the others at the draw; one draw per step; for mean-field "
            "guides only (it refuses others)",
            lambda task: TraceIndeCateR_ELBO(max_plate_nesting=_nesting(task)),
        ),
        Estimator(
            "disarm",
            "TraceDisARM_ELBO()",
            "DisARM (Dong et al. 2020): an antithetic pair of Bernoulli draws from one "
            "set of uniforms, the augmenting uniforms integrated out; Bernoulli sites only",
            lambda task: TraceDisARM_ELBO(),
        ),
        Estimator(
            "rloo_matched",
            "RLOO, matched cost",
            "REINFORCE leave-one-out (Kool et al. 2019) with as many samples as the "
            "exact differences (TraceILSDiff_ELBO()) evaluate the objective per step on "
            f"the model (pyro_ils.infer.evaluations_per_step), at most {RLOO_CAP}",
            lambda task: TraceRLOO_ELBO(num_samples=matched_samples(task)),
        ),
    ]
}

#: Estimators with a temperature to tune after the learning rate (widened by a
#: factor 2 at a best edge, see :mod:`.run`).
TEMPERATURE_GRID = (0.5, 1.0, 2.0)
