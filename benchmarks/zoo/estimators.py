"""The estimators of the zoo, each swapped in the way a user would: the ELBO, or the
guide site's distribution class (the peers).

A task's guide draws its discrete site(s) with ``estimator.site_dist(**params)`` and
adds ``estimator.site_infer`` to the site's ``infer``; everything else in the model
and the guide is as the task's source writes it.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from pyro_ils import TraceILS_ELBO, TraceILSDiff_ELBO
from pyro_ils.estimators import (
    ReinMaxCategorical,
    ReinMaxOneHotCategorical,
    STGumbelCategorical,
    STGumbelOneHotCategorical,
)

#: The one-hot version of each peer's (index-valued) site class.
_ONE_HOT = {
    ReinMaxCategorical: ReinMaxOneHotCategorical,
    STGumbelCategorical: STGumbelOneHotCategorical,
}


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
    #: only where the guide's discrete sites can be enumerated
    needs_enumeration: bool = False

    def loss(self, task):
        return self.make_loss(task)

    def site_dist(self, cls):
        """The distribution class the guide draws a discrete site with: ``cls`` (the
        task's own) unless the estimator swaps it."""
        if self.site_class is None:
            return cls
        return functools.partial(self.site_class, temperature=self.temperature)

    def one_hot(self) -> Estimator:
        """The estimator for a ``OneHotCategorical`` site: a peer's class swapped for
        its one-hot version, as a user would."""
        if self.site_class is None:
            return self
        return dataclasses.replace(self, site_class=_ONE_HOT[self.site_class])

    def with_temperature(self, temperature: float) -> Estimator:
        return dataclasses.replace(self, temperature=temperature)


def _nesting(task) -> int:
    return task.max_plate_nesting


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
    ]
}

#: Estimators with a temperature to tune after the learning rate (widened by a
#: factor 2 at a best edge, see :mod:`.run`).
TEMPERATURE_GRID = (0.5, 1.0, 2.0)
