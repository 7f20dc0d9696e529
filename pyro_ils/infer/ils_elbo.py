r"""ELBOs that route discrete guide sites through ILS.

Each is the Pyro ELBO of the same name with the guide wrapped in
:class:`~pyro_ils.poutine.routing.ILSMessenger`: every latent ``Categorical``,
``OneHotCategorical`` and ``Bernoulli`` guide site (also inside
``Independent``, masked and expanded wrappers) is drawn by ILS, is treated as
reparameterized, and contributes no score-function term. Sites that are
observed, conditioned, enumerated or marked ``infer={"ils": False}`` are left
to the base ELBO.

The guide's ``-log q(z)`` term (``guide_log_prob``)
----------------------------------------------------
With a reparameterized draw, Pyro's surrogate differentiates ``log q(z)``
through the draw and through the parameters at fixed ``z``. For logits the
second part is :math:`z - \pi` (zero mean); kept, it adds to the ILS backward
:math:`\pi - \pi_D` and gives :math:`z - \pi_D`. Three choices:

* ``"stl"`` (default; "sticking the landing", Roeder et al. 2017): drop the
  fixed-``z`` part; ``log q`` acts only through the draw. Logits gradient per
  draw: :math:`w (\pi - \pi_D)`.
* ``"full"``: keep it, as Pyro does for reparameterized sites:
  :math:`w (z - \pi_D)`. Same expectation as ``"stl"``. It cancels the
  zero-mean part of the ILS backward only while the target stays near the drawn
  vertex, i.e. for small steps; once a step moves the target to another vertex
  it adds noise instead.
* ``"analytic"`` (``TraceILS_ELBO`` only): where the model site's distribution
  has a registered KL with the guide's (a matching Categorical, OneHotCategorical
  or Bernoulli), replace ``log p(z) - log q(z)`` by ``-KL(q || p)``, as
  ``TraceMeanField_ELBO`` does; the other ILS sites use ``"stl"``.

``docs/guide_log_prob.md`` has the measurement behind the default: at the
default step size 1, ``"stl"`` had a lower error than ``"full"`` in every case
measured and ``"full"`` was better only for steps of 0.1 or less;
``"analytic"``, where it applies, was best in most cases. ``TraceEnum_ELBO``'s
surrogate uses ``log q`` itself, so ``TraceEnumILS_ELBO`` supports ``"full"``
only.
"""

from __future__ import annotations

from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.trace_elbo import _compute_log_r
from torch.distributions import kl_divergence

from pyro_ils.distributions.generic import check_estimator
from pyro_ils.estimators import ILS, DefaultILS, Estimator
from pyro_ils.options import check_guide_log_prob, check_options
from pyro_ils.poutine.routing import GivenValueMessenger, ILSMessenger, surrogate_base
from pyro_ils.poutine.site_weight import particle_weight

__all__ = ["LogRatio", "guide_site_surrogate", "site_kl", "ils_site_kls"]


class LogRatio:
    """``log p - log q`` of a pair of traces (Pyro's ``_compute_log_r``), computed once,
    on first use."""

    def __init__(self, model_trace, guide_trace):
        self._traces, self._value = (model_trace, guide_trace), None

    def __call__(self):
        if self._value is None:
            self._value = _compute_log_r(*self._traces)
        return self._value


def guide_site_surrogate(site, log_r: LogRatio):
    """A guide site's term of :class:`~pyro.infer.Trace_ELBO`'s surrogate ELBO: minus
    its entropy part, plus its score-function part times the plate-local ``log_r``."""
    _, score_function_term, entropy_term = site["score_parts"]
    surrogate = 0.0
    if not is_identically_zero(entropy_term):
        surrogate = surrogate - entropy_term.sum()
    if not is_identically_zero(score_function_term):
        site_log_r = log_r().sum_to(site["cond_indep_stack"])
        surrogate = surrogate + (site_log_r * score_function_term).sum()
    return surrogate


def site_kl(name, site, model_trace):
    """``KL(q || p)`` (scaled, masked, summed) of the guide site ``site`` against the
    model's latent site of the same name, or ``None`` where there is none or no KL is
    registered for the pair."""
    model_site = model_trace.nodes.get(name)
    if model_site is None or model_site["is_observed"]:
        return None
    try:
        kl = kl_divergence(site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    return scale_and_mask(kl, site["scale"], site["mask"]).sum()


def ils_site_kls(model_trace, guide_trace, skip=()) -> dict:
    """:func:`site_kl` for each latent guide site drawn by a surrogate distribution
    (ILS or another estimator), not enumerated and not in ``skip``, where it exists."""
    kls = {}
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name in skip:
            continue
        if site["infer"].get("enumerate") or surrogate_base(site["fn"]) is None:
            continue
        kl = site_kl(name, site, model_trace)
        if kl is not None:
            kls[name] = kl
    return kls


class _ILSELBOMixin:
    #: The modes this ELBO supports; the first is its default.
    _guide_log_prob_modes: tuple[str, ...] = ("stl", "full")
    #: What keeps the default's per-site choice from applying (see
    #: :mod:`pyro_ils.infer.site_choice`): nothing, sites left to the score function
    #: (``"score_function"``) or enumerated sites (``"enumeration"``).
    _default_blocker: str | None = None

    def __init__(
        self,
        step_size: float | None = None,
        projection: str | None = None,
        guide_log_prob: str | None = None,
        max_alternatives: int | None = None,
        *,
        estimator: Estimator | None = None,
        **elbo_kwargs,
    ):
        from pyro_ils.infer.default_choice_elbo import DefaultChoice
        from pyro_ils.infer.site_choice import DEFAULT_TEMPERATURE

        temperature, self._estimator = None, None
        if estimator is not None:
            check_estimator(estimator)
            if step_size is not None or projection is not None or max_alternatives is not None:
                raise ValueError(
                    "give either estimator= or step_size/projection/max_alternatives, not both"
                )
            if isinstance(estimator, ILS):
                step_size, projection = estimator.step_size, estimator.projection
                temperature = estimator.temperature
            elif isinstance(estimator, DefaultILS):
                max_alternatives = estimator.max_alternatives
            else:
                self._estimator = estimator
        chosen = (step_size, projection, guide_log_prob, self._estimator)
        default_temperature = (
            estimator.temperature if isinstance(estimator, DefaultILS) else DEFAULT_TEMPERATURE
        )
        # The per-site choice of the default (``None`` once options are given).
        self._choice = DefaultChoice.of(
            type(self), chosen, max_alternatives, elbo_kwargs, default_temperature
        )
        # The options as given (``None``: a site's own or the default, resolved per
        # site, so that ``infer={"ils": {"projection": ...}}`` gets that target's step).
        self._given = (step_size, projection)
        self._temperature = temperature
        self.step_size, self.projection = check_options(step_size, projection)
        if guide_log_prob is None:
            guide_log_prob = self._guide_log_prob_modes[0]
        self.guide_log_prob = check_guide_log_prob(guide_log_prob)
        if self.guide_log_prob not in self._guide_log_prob_modes:
            raise ValueError(
                f"{type(self).__name__} supports guide_log_prob in "
                f"{self._guide_log_prob_modes}, got {guide_log_prob!r}"
            )
        super().__init__(**elbo_kwargs)

    @property
    def estimator(self) -> Estimator:
        """The estimator of the routed sites: :class:`~pyro_ils.estimators.DefaultILS`
        for the default, :class:`~pyro_ils.estimators.ILS` with the options given, or the
        estimator given."""
        if self._estimator is not None:
            return self._estimator
        if self._choice is not None:
            return DefaultILS(self._choice.max_alternatives, self._choice.temperature)
        temperature = 1.0 if self._temperature is None else self._temperature
        return ILS(self.step_size, self.projection, temperature)

    @property
    def max_alternatives(self) -> int:
        """The default's largest number of alternatives per site for exact differences
        (``0`` once options are given)."""
        return 0 if self._choice is None else self._choice.max_alternatives

    @property
    def site_choices(self) -> dict:
        """What the default gave each discrete guide site so far
        (:class:`~pyro_ils.infer.site_choice.SiteChoice` by site name); empty when options
        were given (every site then gets first-order ILS with them)."""
        return {} if self._choice is None else self._choice.site_choices

    def _delegate(self, model, guide, args, kwargs):
        """The ELBO that runs the default's per-site choice, or ``None`` (this one)."""
        if self._choice is None:
            return None
        return self._choice.elbo(self, model, guide, args, kwargs)

    def loss(self, model, guide, *args, **kwargs):
        elbo = self._delegate(model, guide, args, kwargs)
        if elbo is not None:
            return elbo.loss(model, guide, *args, **kwargs)
        return super().loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        elbo = self._delegate(model, guide, args, kwargs)
        if elbo is not None:
            return elbo.loss_and_grads(model, guide, *args, **kwargs)
        return super().loss_and_grads(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """A tensor whose value is the loss and whose gradient is the estimate, as
        ``loss_and_grads`` computes it (for Pyro's ``ELBOModule``,
        ``elbo(model, guide)``, and DDP)."""
        elbo = self._delegate(model, guide, args, kwargs)
        if elbo is not None:
            return elbo.differentiable_loss(model, guide, *args, **kwargs)
        return super().differentiable_loss(model, guide, *args, **kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        stl = self.guide_log_prob in ("stl", "analytic")
        guide = ILSMessenger(
            *self._given, stl=stl, temperature=self._temperature, estimator=self._estimator
        )(guide)
        model = GivenValueMessenger()(model)
        with particle_weight(1.0 / self.num_particles):
            return super()._get_trace(model, guide, args, kwargs)
