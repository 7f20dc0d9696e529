"""Every gradient estimator of the benchmark as one :class:`Estimator` entry.

An entry says how a task's guide sites are drawn and which ELBO differentiates the
result. Tasks write their guides with plain ``dist.OneHotCategorical`` sites and
use the one-hot values in matrix products, so that every estimator applies:

* ``guide_dist(fn, hp)``: the distribution that replaces each latent
  ``OneHotCategorical`` guide site (``None``: keep it), installed by
  :class:`~.drawing.SiteSwap`, a small poutine messenger (:mod:`.drawing`);
* ``model_dist(fn, hp)``: the same for the model's latent sites (only the relaxed
  density path, whose prior is the relaxed prior);
* ``elbo(hp, task)``: the ELBO;
* ``site_infer``: ``"enumerate"``, ``"avg_baseline"`` or ``"nvil"`` (infer options
  added to each guide site);
* ``evals``: objective evaluations per step (RLOO with S samples: S), or a function
  of the task (ILS-diff: one plus the alternatives it evaluates);
* ``grid``: the estimator's own hyper-parameter and its values (the gradient part
  measures every value, :func:`.gradients.configs`); ``default`` is the value the
  cost part uses.

A new estimator is one :func:`register` call. This module registers Pyro's own
estimators and the ILS family; :mod:`.peers` registers those that other modules of
the package provide (``pyro_ils.estimators``, ``pyro_ils.distributions``,
``pyro_ils.infer``), each only when it imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from pyro_ils import TraceILS_ELBO, TraceILSCV_ELBO, TraceILSDiff_ELBO

from .drawing import (  # noqa: F401  (prepare, SiteSwap: this module's interface)
    GumbelSoftmaxOneHot,
    SiteSwap,
    _gumbel_softmax_kl,
    _relaxed,
    _st_gumbel_pyro,
    prepare,
)

TEMPERATURES = (0.5, 1.0, 2.0)
REINMAX_TEMPERATURES = (1.0, 1.3, 2.0)
ILS_STEPS = (0.1, 1.0, 10.0)


@dataclass(frozen=True)
class Estimator:
    key: str
    label: str
    family: str
    elbo: Callable
    guide_dist: Callable | None = None
    model_dist: Callable | None = None
    site_infer: str | None = None
    evals: int | Callable = 1  # or a function of the task
    grid: dict = field(default_factory=dict)
    default: dict = field(default_factory=dict)
    exact: bool = False
    stateful: bool = False
    tasks: tuple | None = None  # None: every task
    note: str = ""

    @property
    def hyper(self) -> str | None:
        return next(iter(self.grid), None)

    def runs_on(self, task) -> bool:
        if self.exact and not task.enumerable:
            return False
        return self.tasks is None or task.name in self.tasks

    def cost(self, task) -> int:
        """Objective evaluations per step (the exact gradient: every joint value)."""
        if self.exact:
            return task.num_configs
        return self.evals(task) if callable(self.evals) else self.evals


REGISTRY: dict[str, Estimator] = {}
#: Estimators of ``pyro_ils.estimators`` that were asked for but did not import.
MISSING: dict[str, str] = {}


def register(est: Estimator) -> Estimator:
    REGISTRY[est.key] = est
    return est


# -- the entries --------------------------------------------------------------------

register(
    Estimator(
        "exact",
        "Exact (TraceEnum_ELBO)",
        "exact",
        lambda hp, task: TraceEnum_ELBO(max_plate_nesting=task.max_plate_nesting),
        site_infer="enumerate",
        exact=True,
        note="guide sites enumerated in parallel; the referee",
    )
)
register(
    Estimator(
        "reinforce", "REINFORCE (Trace_ELBO)", "score function", lambda hp, task: Trace_ELBO()
    )
)
register(
    Estimator(
        "tracegraph_avg",
        "TraceGraph_ELBO + avg baseline",
        "score function",
        lambda hp, task: TraceGraph_ELBO(),
        site_infer="avg_baseline",
        stateful=True,
        note="decaying-average baseline (beta 0.9), Rao-Blackwellized by plate",
    )
)
register(
    Estimator(
        "nvil",
        "TraceGraph_ELBO + NVIL baseline",
        "score function",
        lambda hp, task: TraceGraph_ELBO(),
        site_infer="nvil",
        stateful=True,
        note="learned input-dependent baseline (MLP, 32 tanh units), trained with the model",
    )
)
register(
    Estimator(
        "gumbel_density",
        "Gumbel-Softmax (Pyro, relaxed densities)",
        "relaxation",
        lambda hp, task: Trace_ELBO(),
        guide_dist=_relaxed,
        model_dist=_relaxed,
        grid={"temperature": TEMPERATURES},
        default={"temperature": 1.0},
        note="RelaxedOneHotCategorical in guide and model (Concrete prior); relaxed forward",
    )
)
register(
    Estimator(
        "gumbel_kl",
        "Gumbel-Softmax (analytic KL)",
        "relaxation",
        lambda hp, task: TraceMeanField_ELBO(),
        guide_dist=_gumbel_softmax_kl,
        grid={"temperature": TEMPERATURES},
        default={"temperature": 1.0},
        note="relaxed forward in the likelihood, exact KL(q || p) of the categoricals",
    )
)
register(
    Estimator(
        "st_gumbel_pyro",
        "ST-Gumbel (Pyro, relaxed density)",
        "straight-through",
        lambda hp, task: Trace_ELBO(),
        guide_dist=_st_gumbel_pyro,
        grid={"temperature": TEMPERATURES},
        default={"temperature": 1.0},
        note="RelaxedOneHotCategoricalStraightThrough guide, OneHotCategorical prior: "
        "the relaxed density of q against the mass of p (Pyro's path, weak)",
    )
)


def _ils(projection):
    def elbo(hp, task):
        return TraceILS_ELBO(
            step_size=hp["step_size"], projection=projection, guide_log_prob="analytic"
        )

    return elbo


for _proj, _tasks in (
    ("euclidean", None),
    ("normalize", None),
    ("reference", ("toy", "poly")),
    # Variants stepped from pi with the entropic map (pyro_ils.ops.projections.MEAN_START_TARGETS).
    ("mirror", None),
    ("mirror_rms", None),
):
    register(
        Estimator(
            f"ils_{_proj}",
            f"ILS {_proj}",
            "ILS",
            _ils(_proj),
            grid={"step_size": ILS_STEPS},
            default={"step_size": 1.0},
            tasks=_tasks,
            note="TraceILS_ELBO(guide_log_prob='analytic')"
            + (" - the original code's incorrect gradient, for comparison" if _tasks else ""),
        )
    )


register(
    Estimator(
        "ils_cv",
        "ILS-CV (S=2)",
        "ILS",
        lambda hp, task: TraceILSCV_ELBO(num_samples=2, eta=hp["eta"]),
        evals=2,
        grid={"eta": (0.25, 1.0)},
        default={"eta": 1.0},
        note="TraceILSCV_ELBO: the other particle's first-order ILS signal as a "
        "leave-one-out control variate (unbiased)",
    )
)


#: Alternatives that TraceILSDiff_ELBO evaluates per step on each task: K per
#: site, times the latents that one likelihood couples (see pyro_ils.infer.trace_ils_diff_elbo).
DIFF_ALTERNATIVES = {
    "toy": lambda task: task.K,
    "poly": lambda task: 2,
    "moe": lambda task: task.size["experts"],
    "vae_small": lambda task: task.L * task.K,
    "vae_large": lambda task: task.L * task.K,
    "cost": lambda task: task.L * task.K,
}


def _diff_evals(task) -> int:
    return 1 + DIFF_ALTERNATIVES[task.name](task)


for _key, _label, _analytic, _what in (
    ("ils_diff", "ILS-diff mirror", True, "analytic KL"),
    (
        "ils_diff_post",
        "ILS-diff mirror, no analytic KL",
        False,
        "the site's own log p - log q in d (at step 1 the target is the conditional posterior)",
    ),
):
    register(
        Estimator(
            _key,
            _label,
            "ILS",
            lambda hp, task, a=_analytic: TraceILSDiff_ELBO(
                step_size=hp["step_size"],
                projection="mirror",
                analytic_kl=a,
                rao_blackwellize=False,
            ),
            evals=_diff_evals,
            grid={"step_size": ILS_STEPS},
            default={"step_size": 1.0},
            note="TraceILSDiff_ELBO: exact differences L(k) - L(z) over every alternative "
            "in place of dL/dz (one more model run per site, K alternatives each), "
            f"entropic map, {_what}",
        )
    )


register(
    Estimator(
        "ils_diff_rb",
        "ILS-diff mirror, Rao-Blackwellized",
        "ILS",
        lambda hp, task: TraceILSDiff_ELBO(
            step_size=hp["step_size"], projection="mirror", rao_blackwellize=True
        ),
        evals=_diff_evals,
        grid={"step_size": ILS_STEPS},
        default={"step_size": 0.1},
        note="TraceILSDiff_ELBO(rao_blackwellize=True): ILS-diff whose model terms are "
        "averaged over the alternatives already evaluated (the model's parameters learn "
        "from every alternative, weighted by q), analytic KL",
    )
)
register(
    Estimator(
        "ils_diff_rb0",
        "ILS-diff limit, Rao-Blackwellized",
        "ILS",
        lambda hp, task: TraceILSDiff_ELBO(step_size=0, rao_blackwellize=True),
        evals=_diff_evals,
        note="TraceILSDiff_ELBO(step_size=0, rao_blackwellize=True): the small-step limit "
        "(the local expectation gradient; no step size to tune) with Rao-Blackwellized "
        "model terms, analytic KL",
    )
)


#: Display order (families together).
ORDER = (
    "exact",
    "reinforce",
    "tracegraph_avg",
    "nvil",
    "rloo2",
    "rloo4",
    "rloo_matched",
    "indecater",
    "muprop",
    "rebar",
    "relax",
    "gumbel_density",
    "gumbel_kl",
    "st_gumbel_pyro",
    "st_gumbel_kl",
    "st",
    "reinmax",
    "gumbel_rao",
    "gst",
    "ils_euclidean",
    "ils_normalize",
    "ils_reference",
    "ils_mirror",
    "ils_mirror_rms",
    "ils_cv",
    "ils_diff",
    "ils_diff_post",
    "ils_diff_rb",
    "ils_diff_rb0",
)


def estimators(keys=None) -> list[Estimator]:
    order = [k for k in ORDER if k in REGISTRY] + [k for k in REGISTRY if k not in ORDER]
    if keys:
        unknown = [k for k in keys if k not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown estimators {unknown}; have {order}")
        order = [k for k in order if k in keys]
    return [REGISTRY[k] for k in order]


# The estimators of the package's other modules (after ``register`` and the grids above,
# which they use).
from . import peers  # noqa: E402,F401
