r"""The default's choice, per discrete guide site, between exact differences and the
midpoint limit.

``TraceILS_ELBO()`` with no estimator options (no ``step_size``, ``projection`` or
``guide_log_prob``) gives each latent ``Categorical``, ``OneHotCategorical`` and
``Bernoulli`` guide site one of two ILS members:

* **exact differences** (:class:`~pyro_ils.TraceILSDiff_ELBO` at its defaults: the
  small-step limit of the entropic target built from :math:`d_k = L(z_i = k) -
  L(z_i)`, Rao-Blackwellized, with the analytic KL). That is the local expectation
  gradient (Titsias and Lazaro-Gredilla 2015), in the family of IndeCateR (De Smet
  et al. 2023). For one latent per data point (a mixture) it is the exact gradient.
  It costs one more run of the model and the guide over the site's ``M``
  alternatives, stacked along a new batch dim;
* **the midpoint limit** (``projection="midpoint"``, ``step_size=0``): one
  evaluation, the second-order ILS target in its small-step limit, which is ReinMax's
  estimator (Liu et al. 2023) at the target's temperature. A site past the budget
  (rule 2) gets it at :data:`DEFAULT_TEMPERATURE`; every other site that gets it
  (asked for, fallen back, or under an ELBO the rule does not apply to) at
  temperature 1, where it is unbiased for a loss linear in the draw.

Wherever the model's site has a KL registered with the guide's (a matching
categorical or Bernoulli prior), the default takes :math:`-\mathrm{KL}(q \| p)`
analytically for the site's ``log p - log q`` at both members, as
:class:`~pyro.infer.TraceMeanField_ELBO` does.

**The rule**, applied once per site name, at the first step that draws the site:

1. ``infer={"ils": {"exact_differences": True}}`` asks for exact differences and
   ``False`` (or a ``temperature``) for the midpoint limit; a site dict that sets
   ``step_size`` or ``projection`` gets first-order ILS with those options; a site
   whose guide distribution is already an ILS distribution keeps it.
2. Otherwise a site gets exact differences when it has at most ``max_alternatives``
   alternatives (``M = K`` for a latent whose terms lie in all its plates, ``M = C
   K`` for ``C`` coupled elements such as ``.to_event`` latents; default
   :data:`DEFAULT_MAX_ALTERNATIVES`), and the midpoint limit otherwise.
3. A site chosen for exact differences whose model or guide does not broadcast over
   the alternatives falls back to the midpoint limit at temperature 1. Where the rule
   chose exact differences, the fallback is a log record at level ``WARNING`` on the
   ``pyro_ils`` logger that names the error; where the site asked for them
   (``{"exact_differences": True}``), a :class:`SiteChoiceWarning`.

**Why a log record, not a warning, where the rule chose.** Running the model over the
alternatives asks more of it than ``Trace_ELBO`` does: a new batch dim left of its
plates, as Pyro's parallel enumeration and ``vectorize_particles`` add. With those, the
user opts in, and a model that checks its shapes (Pyro's own valid-model tests do:
``assert x.shape == (5, 1, 1)``) fails. Here nobody opted in: the model is valid for
``Trace_ELBO``, the ELBO ``TraceILS_ELBO()`` stands in for, and the fallback is a
correct member of the family, so nothing is wrong that the user must fix. Pyro itself
falls back silently from its better estimator where the better one is not available
(``TraceMeanField_ELBO`` takes the KL by Monte Carlo where none is registered). A
``UserWarning`` would make a valid model fail wherever warnings are errors (Pyro's
pytest configuration); the record still shows by default (Python's last-resort handler
prints ``WARNING`` records to stderr where logging is not configured) and says how to
get the better estimator back. A site that asked for exact differences and does not
get them is a request not honoured, which is what a warning is for.

**The temperature.** A temperature above 1 moves the midpoint towards the middle of
the simplex: the backward is biased even for a linear loss but varies less, which pays
where a site has many alternatives. :data:`DEFAULT_TEMPERATURE` was chosen on the
zoo's VAEs (the models whose sites are past the budget) on their tuning seeds only, by
the rule of ``benchmarks/zoo/temperature.py`` fixed before the run (minimax regret of
the held-out ELBO over the models; ``benchmarks/results/zoo/default_temperature.json``).
``infer={"ils": {"temperature": t}}`` sets it for one site.

The count is a cost rule fixed in advance, not a timing, so that a seeded run is
reproducible. The default of 20 was chosen on the zoo (``docs/zoo/``) on a 2-core CPU:
the mixtures there have 3 to 20 alternatives per draw and the categorical VAEs 24
or more, whose decoder would run that many times per step. On a GPU, where the
alternatives run in parallel, a larger ``max_alternatives`` is worth trying.

``TraceGraphILS_ELBO()`` and ``TraceEnumILS_ELBO()`` apply the same rule where the
guide leaves no site to the score function, respectively where no site of the model
or guide is marked for enumeration (:func:`blocking_sites`): their gradient is then
that of ``Trace_ELBO``, which the rule runs. Otherwise they give every routed site the
midpoint limit (``TraceGraph_ELBO`` keeps its baselines for the score-function sites).
The first step with each ``(model, guide)`` pair decides, from one trace of the guide
(and one of the model, for ``TraceEnumILS_ELBO()`` where the guide marks nothing for
enumeration); the random state is left as it was.

``elbo.site_choices`` shows what each site got, and the choices are logged at level
``INFO`` on the ``pyro_ils`` logger.

References:
    Titsias, M. K. and Lazaro-Gredilla, M. (2015). Local expectation gradients for
    black box variational inference. NeurIPS.

    De Smet, L., Sansone, E. and Zuidberg Dos Martins, P. (2023). Differentiable
    sampling of categorical distributions using the CatLog-derivative trick. NeurIPS.

    Liu, L., Dong, C., Liu, X., Yu, B. and Gao, J. (2023). Bridging discrete and
    backpropagation: straight-through and beyond. NeurIPS.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from pyro_ils.infer.ils_diff_plan import _PlainDrawMessenger
from pyro_ils.infer.site_probe import (
    blocking_sites,
)
from pyro_ils.options import DEFAULT_PROJECTION, check_ils_temperature
from pyro_ils.poutine.routing import (
    _wraps_ils,
    eligible,
    has_ils_version,
    named_estimator,
    to_ils,
)

__all__ = [
    "DEFAULT_MAX_ALTERNATIVES",
    "DEFAULT_TEMPERATURE",
    "SiteChoice",
    "SiteChoiceWarning",
    "blocking_sites",
    "requested",
]

#: Sites with at most this many alternatives get exact differences by default.
DEFAULT_MAX_ALTERNATIVES = 20
#: The temperature of the midpoint limit that sites past ``max_alternatives`` get,
#: chosen on the zoo's VAEs (see the module docstring).
DEFAULT_TEMPERATURE = 2.0
DIFFERENCES = "exact differences"
MIDPOINT = "midpoint limit"
FIRST_ORDER = "first-order ILS"
_log = logging.getLogger("pyro_ils")
#: What a model that does not broadcast over the alternatives raises (an
#: ``AssertionError``: a model or guide that checks its own shapes). An assertion
#: inside Pyro or torch during the run over the alternatives falls back too; the
#: log record (or warning) names it, and the site's next steps run it without the
#: alternatives.
_BROADCAST_ERRORS = (
    RuntimeError,
    ValueError,
    IndexError,
    TypeError,
    NotImplementedError,
    AssertionError,
)


class SiteChoiceWarning(UserWarning):
    """A site that asked for exact differences (``infer={"ils": {"exact_differences":
    True}}``) does not broadcast over its alternatives and fell back to the midpoint
    limit. Where the default's rule chose exact differences, the same fallback is a log
    record at level ``WARNING`` on the ``pyro_ils`` logger instead (see
    :mod:`pyro_ils.infer.site_choice`)."""


class SiteChoice(NamedTuple):
    """What the default gave one guide site."""

    #: ``"exact differences"``, ``"midpoint limit"``, ``"first-order ILS"``, or the
    #: estimator a site names in ``infer={"ils": ...}`` (its ``repr``)
    member: str
    alternatives: int | None  #: ``M``, the rows of the site's run over alternatives
    reason: str  #: why, in words
    #: the midpoint limit's temperature (1 for the other members)
    temperature: float = 1.0

    def __str__(self) -> str:
        at = f" at temperature {self.temperature:g}" if self.temperature != 1.0 else ""
        return f"{self.member}{at} ({self.reason})"


def requested(infer: dict) -> bool | None:
    """A site's own request: ``True`` (exact differences), ``False`` (first-order),
    or ``None`` (the rule decides)."""
    if named_estimator(infer) is not None:
        return False
    ils = infer.get("ils", True)
    if not isinstance(ils, dict):
        return None
    if "exact_differences" in ils:
        value = ils["exact_differences"]
        if not isinstance(value, bool):
            raise ValueError(f"infer['ils']['exact_differences'] must be a bool, got {value!r}")
        return value
    if {"step_size", "projection", "temperature"} & set(ils):
        return False
    return None


class _ChoosingMessenger(_PlainDrawMessenger):
    """Draw plainly and mark the sites chosen for exact differences, and the sites
    not yet chosen (``candidates``); leave the others to the outer ILSMessenger."""

    def __init__(self, choices: dict[str, SiteChoice]):
        super().__init__(0.0, "mirror")
        self.choices = choices
        self.candidates: list[str] = []

    def _pyro_sample(self, msg) -> None:
        if not eligible(msg) or not has_ils_version(msg["fn"]):
            return
        if msg["infer"].get("ils", True) is False:
            return
        if _wraps_ils(msg["fn"]):
            reason = "the guide's ILS distribution keeps its options"
            self.choices[msg["name"]] = SiteChoice(FIRST_ORDER, None, reason)
            return
        chosen = named_estimator(msg["infer"])
        if chosen is not None:
            self.choices[msg["name"]] = SiteChoice(repr(chosen), None, "its estimator in infer")
            return
        if requested(msg["infer"]) is False:
            ils = msg["infer"]["ils"]
            own = "step_size" in ils or "projection" in ils
            member, reason = (FIRST_ORDER, "options in infer") if own else (MIDPOINT, "asked for")
            temperature = check_ils_temperature(ils.get("temperature"), DEFAULT_PROJECTION)
            self.choices[msg["name"]] = SiteChoice(member, None, reason, temperature)
            return
        choice = self.choices.get(msg["name"])
        if choice is not None and choice.member != DIFFERENCES:
            if choice.temperature != 1.0:
                msg["fn"] = to_ils(msg["fn"], temperature=choice.temperature)
            return
        if choice is None:
            self.candidates.append(msg["name"])
        super()._pyro_sample(msg)
