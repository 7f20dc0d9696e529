"""The estimators that the package's other modules provide, registered in
:mod:`.registry` through :func:`~.registry.register`, each only when it imports (a
missing one is recorded in :data:`~.registry.MISSING` and named on the page):

* ``pyro_ils.estimators``: RLOO (S = 2, 4), MuProp, REBAR, RELAX, straight-through,
  ST-Gumbel and ReinMax with the analytic KL;
* the newer peers: Gumbel-Rao (Paulus et al. 2021) and GST (Fan et al. 2022) from
  ``pyro_ils.distributions``, IndeCateR (De Smet et al. 2023) and RLOO with as many
  samples as ILS-diff evaluates (``pyro_ils.infer``).
"""

from __future__ import annotations

import importlib

from pyro.infer import TraceMeanField_ELBO

from benchmarks.zoo.estimators import RLOO_CAP

from .registry import MISSING, REINMAX_TEMPERATURES, TEMPERATURES, Estimator, _diff_evals, register


def _optional(name, module="pyro_ils.estimators"):
    try:
        mod = importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - any import failure means "not available"
        MISSING[name] = f"{module} does not import ({type(error).__name__})"
        return None
    obj = getattr(mod, name, None)
    if obj is None:
        MISSING[name] = f"not in {module}"
    return obj


def _register_optional():
    rloo = _optional("TraceRLOO_ELBO")
    if rloo is not None:
        for s in (2, 4):
            register(
                Estimator(
                    f"rloo{s}",
                    f"RLOO (S={s})",
                    "score function",
                    lambda hp, task, s=s: rloo(num_samples=s),
                    evals=s,
                    note=f"leave-one-out REINFORCE over {s} samples",
                )
            )
    muprop = _optional("TraceMuProp_ELBO")
    if muprop is not None:
        register(
            Estimator(
                "muprop",
                "MuProp",
                "control variate",
                lambda hp, task: muprop(),
                evals=2,
                note="first-order Taylor control variate around the mean-field point",
            )
        )
    rebar = _optional("TraceREBAR_ELBO")
    if rebar is not None:
        register(
            Estimator(
                "rebar",
                "REBAR",
                "control variate",
                lambda hp, task: rebar(temperature=0.5, eta=1.0, tune=True),
                evals=3,
                stateful=True,
                note="temperature and eta tuned online (tune=True)",
            )
        )
    relax = _optional("TraceRELAX_ELBO")
    if relax is not None:
        register(
            Estimator(
                "relax",
                "RELAX",
                "control variate",
                lambda hp, task: relax(control_variate=None, temperature=0.5),
                evals=3,
                stateful=True,
                note="default control variate, trained online to minimize variance",
            )
        )
    for cls_name, key, label, grid in (
        ("STOneHotCategorical", "st", "Straight-through (analytic KL)", None),
        ("STGumbelOneHotCategorical", "st_gumbel_kl", "ST-Gumbel (analytic KL)", TEMPERATURES),
        ("ReinMaxOneHotCategorical", "reinmax", "ReinMax (analytic KL)", REINMAX_TEMPERATURES),
    ):
        cls = _optional(cls_name)
        if cls is not None:
            _straight_through(
                key, label, cls, grid, f"pyro_ils.estimators.{cls_name} with TraceMeanField_ELBO"
            )


def _straight_through(key, label, cls, grid, note, **kw):
    """Register a straight-through family member: ``cls(logits=...)`` in the guide,
    with ``temperature`` from ``grid`` (default: its middle value) where it has one."""
    if grid is None:
        make, extra = (lambda fn, hp: cls(logits=fn.logits, **kw)), {}
    else:
        make = lambda fn, hp: cls(logits=fn.logits, temperature=hp["temperature"], **kw)  # noqa: E731
        extra = {"grid": {"temperature": grid}, "default": {"temperature": grid[1]}}
    register(
        Estimator(
            key,
            label,
            "straight-through",
            lambda hp, task: TraceMeanField_ELBO(),
            guide_dist=make,
            note=note,
            **extra,
        )
    )


def _matched(task) -> int:
    """RLOO's samples matched to ILS-diff's evaluations, capped as the zoo caps them."""
    return min(_diff_evals(task), RLOO_CAP)


def _register_new_peers():
    for cls_name, key, label, kw, what in (
        ("GumbelRaoOneHotCategorical", "gumbel_rao", "Gumbel-Rao (10 samples, analytic KL)",
         {"num_samples": 10}, "Paulus et al. 2021: the straight-through Gumbel gradient "
         "averaged over 10 Gumbel draws given the sample"),
        ("GSTOneHotCategorical", "gst", "GST (kappa 1, analytic KL)", {"kappa": 1.0},
         "Fan et al. 2022: gapped straight-through, kappa 1.0"),
    ):  # fmt: skip
        cls = _optional(cls_name, "pyro_ils.distributions")
        if cls is not None:
            note = f"pyro_ils.distributions.{cls_name} with TraceMeanField_ELBO; {what}"
            _straight_through(key, label, cls, TEMPERATURES, note, **kw)
    indecater = _optional("TraceIndeCateR_ELBO", "pyro_ils.infer")
    if indecater is not None:
        register(
            Estimator(
                "indecater",
                "IndeCateR",
                "score function",
                lambda hp, task: indecater(),
                evals=_diff_evals,
                note="De Smet et al. 2023: TraceIndeCateR_ELBO(), every category of each "
                "site summed given the other sites' draw (unbiased); counted at ILS-diff's "
                "evaluations per step",
            )
        )
    rloo = _optional("TraceRLOO_ELBO", "pyro_ils.infer")
    if rloo is not None:
        register(
            Estimator(
                "rloo_matched",
                f"RLOO, matched to ILS-diff (S = 1 + alternatives, at most {RLOO_CAP})",
                "score function",
                lambda hp, task: rloo(num_samples=_matched(task)),
                evals=_matched,
                note="TraceRLOO_ELBO(num_samples=S) with S the objective evaluations "
                f"ILS-diff makes per step on the task, at most {RLOO_CAP} as in the zoo "
                "(unbiased)",
            )
        )


_register_optional()
_register_new_peers()
