"""The default of the ILS ELBOs at run time: :class:`DefaultChoice` holds an ELBO's
budget and decisions, and :class:`DefaultChoiceELBO` runs the per-site rule of
:mod:`pyro_ils.infer.site_choice` (exact differences where they apply, the midpoint
limit elsewhere)."""

from __future__ import annotations

import warnings

import torch
from pyro.util import get_rng_state, set_rng_state

from pyro_ils.infer.ils_diff_plan import _max_plate_nesting, _Plan
from pyro_ils.infer.site_choice import (
    _BROADCAST_ERRORS,
    DEFAULT_MAX_ALTERNATIVES,
    DEFAULT_TEMPERATURE,
    DIFFERENCES,
    FIRST_ORDER,
    MIDPOINT,
    SiteChoice,
    SiteChoiceWarning,
    _ChoosingMessenger,
    _log,
    requested,
)
from pyro_ils.infer.site_probe import (
    latent_sites,
    probe,
    warn_if_nothing_enumerated,
)
from pyro_ils.infer.trace_ils_diff_elbo import TraceILSDiff_ELBO
from pyro_ils.options import check_count
from pyro_ils.poutine.routing import (
    DIFF_KEY,
    GivenValueMessenger,
    ILSMessenger,
    _wraps_ils,
)
from pyro_ils.poutine.site_weight import particle_weight

__all__ = ["DefaultChoice", "DefaultChoiceELBO"]


class DefaultChoice:
    """The default of one ILS ELBO: its budget and, for each model and guide it has
    run, the :class:`DefaultChoiceELBO` that runs it (or none, where the ELBO keeps
    the midpoint limit on every site because of
    :func:`~pyro_ils.infer.site_choice.blocking_sites`).

    An ELBO with a blocker decides at the first step of each ``(model, guide)`` pair,
    so that one instance can serve several models (Pyro's tests reuse one
    ``TraceEnum_ELBO`` for a model without enumerated sites and one with them)."""

    def __init__(
        self,
        blocker: str | None,
        max_alternatives: int,
        elbo_kwargs: dict,
        temperature: float = DEFAULT_TEMPERATURE,
    ):
        self.blocker, self.max_alternatives = blocker, max_alternatives
        self.temperature = temperature
        self._kwargs = {**elbo_kwargs, "temperature": temperature}
        #: ``(model, guide) -> (elbo or None, the sites kept at the midpoint limit)``
        self._decisions: dict[tuple, tuple[DefaultChoiceELBO | None, dict]] = {}
        self._elbo: DefaultChoiceELBO | None = None
        self._kept: dict[str, SiteChoice] = {}
        if blocker is None:
            self._elbo = DefaultChoiceELBO(max_alternatives, **self._kwargs)

    @classmethod
    def of(
        cls,
        elbo_class,
        options,
        max_alternatives,
        elbo_kwargs,
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> DefaultChoice | None:
        """The default's state for an ELBO built with ``options`` (``step_size``,
        ``projection``, ``guide_log_prob``, an estimator other than ILS's); ``None``
        where any is given. ``temperature`` is the midpoint limit's."""
        if max_alternatives is None:
            max_alternatives = DEFAULT_MAX_ALTERNATIVES
        max_alternatives = check_count("max_alternatives", max_alternatives)
        if any(option is not None for option in options) or max_alternatives == 0:
            return None
        if elbo_kwargs.get("vectorize_particles"):
            return None
        return cls(elbo_class._default_blocker, max_alternatives, elbo_kwargs, temperature)

    @property
    def site_choices(self) -> dict[str, SiteChoice]:
        """The choices of the model and guide run last."""
        return dict(self._elbo.site_choices if self._elbo is not None else self._kept)

    def elbo(self, owner, model, guide, args, kwargs) -> DefaultChoiceELBO | None:
        if self.blocker is None:
            return self._elbo
        key = (model, guide)
        if key not in self._decisions:
            blocking, guide_trace = probe(owner, self.blocker, model, guide, args, kwargs)
            if blocking:
                decision = (None, self._keep(type(owner).__name__, blocking, guide_trace))
            else:
                elbo = DefaultChoiceELBO(self.max_alternatives, **self._kwargs)
                if self.blocker == "enumeration":
                    elbo.enumeration_owner = owner
                decision = (elbo, {})
            self._decisions[key] = decision
        self._elbo, self._kept = self._decisions[key]
        return self._elbo

    def _keep(self, owner: str, blocking: list[str], guide_trace) -> dict[str, SiteChoice]:
        why = "score-function" if self.blocker == "score_function" else "enumerated"
        reason = f"{owner}() with {why} sites {blocking}"
        kept = {}
        for name, site in latent_sites(guide_trace):
            if site["fn"].has_rsample and _wraps_ils(site["fn"]):
                ils = site["infer"].get("ils")
                own = isinstance(ils, dict) and bool({"step_size", "projection"} & set(ils))
                kept[name] = SiteChoice(FIRST_ORDER if own else MIDPOINT, None, reason)
                _log.info("%s: site %r gets %s", owner, name, kept[name])
        return kept


class _Redraw(Exception):
    """Some sites drawn plainly in this trace got a first-order member: trace again."""


class DefaultChoiceELBO(TraceILSDiff_ELBO):
    """The default of :class:`~pyro_ils.TraceILS_ELBO`: exact differences where the
    rule of :mod:`pyro_ils.infer.site_choice` allows them, the midpoint limit elsewhere."""

    def __init__(
        self,
        max_alternatives: int = DEFAULT_MAX_ALTERNATIVES,
        temperature: float = DEFAULT_TEMPERATURE,
        **elbo_kwargs,
    ):
        super().__init__(**elbo_kwargs)
        self.max_alternatives = max_alternatives
        self.temperature = temperature
        self.site_choices: dict[str, SiteChoice] = {}
        #: the ``TraceEnumILS_ELBO`` this runs for, where nothing is enumerated: it warns
        #: as ``TraceEnum_ELBO`` does (``pyro_ils.infer.site_probe.warn_if_nothing_enumerated``)
        self.enumeration_owner = None

    def _wrap_guide(self, guide):
        self._chooser = _ChoosingMessenger(self.site_choices)
        return ILSMessenger(stl=True)(self._chooser(guide))

    def _get_trace(self, model, guide, args, kwargs):
        model = GivenValueMessenger()(model)
        # A trace drawn again once new sites are chosen draws the same values.
        state = get_rng_state()
        for _ in range(3):
            try:
                with particle_weight(1.0 / self.num_particles):
                    traces = super()._get_trace(model, guide, args, kwargs)
            except _Redraw:
                set_rng_state(state)
                continue
            if self.enumeration_owner is not None:  # TraceEnum's warning, per trace
                warn_if_nothing_enumerated(self.enumeration_owner)
            return traces
        raise RuntimeError("TraceILS_ELBO: the site choices did not settle")  # pragma: no cover

    def choose(self, model, guide, *args, **kwargs) -> None:
        """Make the per-site choice of the sites not chosen yet, as a step would: one
        draw, its alternatives run without gradients, no parameter changed."""
        with torch.no_grad():
            self._get_trace(model, guide, args, kwargs)

    def _attach_targets(self, model, guide, args, kwargs, model_trace, guide_trace):
        new = [n for n in self._chooser.candidates if n not in self.site_choices]
        if new:
            self._choose(new, model, guide, args, kwargs, model_trace, guide_trace)
            if any(self.site_choices[n].member != DIFFERENCES for n in new):
                raise _Redraw
        try:
            super()._attach_targets(model, guide, args, kwargs, model_trace, guide_trace)
        except _BROADCAST_ERRORS as error:
            if new:
                raise  # the probe passed with these very sites: not a broadcasting problem
            for name in self._chooser.candidates + self._marked(guide_trace):
                site = guide_trace.nodes[name]
                self._fall_back(name, self.site_choices[name].alternatives, error, site)
            raise _Redraw from error

    @staticmethod
    def _marked(guide_trace) -> list[str]:
        return [n for n, s in guide_trace.nodes.items() if DIFF_KEY in s.get("infer", {})]

    def _fall_back(self, name, alternatives, error, site) -> None:
        """Give ``name`` the midpoint limit: a warning where the site asked for exact
        differences, a ``WARNING`` log record where the rule chose them (see the
        module docstring)."""
        count = "" if alternatives is None else f"{alternatives} "
        message = (
            f"TraceILS_ELBO(): site {name!r} does not broadcast over its {count}"
            f"alternatives ({type(error).__name__}: {error}); it gets the midpoint limit."
        )
        if requested(site["infer"]) is True:
            warnings.warn(
                f"{message} It asked for exact differences; make its model and guide "
                "broadcast over a new batch dim left of their plates, or drop the request.",
                SiteChoiceWarning,
                stacklevel=2,
            )
        else:
            _log.warning(
                "%s Make its model and guide broadcast over a new batch dim left of their "
                "plates for exact differences, or mark it "
                "infer={'ils': {'exact_differences': False}} to silence this.",
                message,
            )
        self._set(name, SiteChoice(MIDPOINT, alternatives, "did not broadcast: fell back"))

    def _set(self, name: str, choice: SiteChoice) -> None:
        self.site_choices[name] = choice
        _log.info("TraceILS_ELBO(): site %r gets %s", name, choice)

    def _choose(self, names, model, guide, args, kwargs, model_trace, guide_trace) -> None:
        nesting = self._nesting
        if nesting is None:
            nesting = _max_plate_nesting(model_trace, guide_trace)
        plans = {}
        for name in names:
            site = guide_trace.nodes[name]
            try:
                plan = _Plan.of(name, site, None, nesting, guide_trace, model_trace)
            except _BROADCAST_ERRORS as error:
                self._fall_back(name, None, error, site)
                continue
            forced = requested(site["infer"]) is True
            if not forced and plan.num_alt > self.max_alternatives:
                reason = f"{plan.num_alt} alternatives > max_alternatives={self.max_alternatives}"
                self._set(name, SiteChoice(MIDPOINT, plan.num_alt, reason, self.temperature))
                continue
            plans[name] = plan
        if not plans:
            return
        try:
            self._probe(list(plans.values()), model, guide, args, kwargs, guide_trace, nesting)
            failed = {}
        except _BROADCAST_ERRORS:
            failed = {}
            for name, plan in plans.items():
                try:
                    self._probe([plan], model, guide, args, kwargs, guide_trace, nesting)
                except _BROADCAST_ERRORS as error:
                    failed[name] = error
        for name, plan in plans.items():
            if name in failed:
                self._fall_back(name, plan.num_alt, failed[name], guide_trace.nodes[name])
                continue
            forced = requested(guide_trace.nodes[name]["infer"]) is True
            why = "asked for" if forced else f"{plan.num_alt} <= {self.max_alternatives}"
            reason = f"{plan.num_alt} alternatives, {why}"
            self._set(name, SiteChoice(DIFFERENCES, plan.num_alt, reason))

    def _probe(self, plans, model, guide, args, kwargs, guide_trace, nesting) -> None:
        with torch.no_grad():
            self._differences(plans, model, guide, args, kwargs, guide_trace, nesting)
