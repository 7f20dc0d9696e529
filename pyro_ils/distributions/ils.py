r"""Drop-in discrete distributions whose ``rsample()`` carries the ILS backward.

Each class subclasses Pyro's own (``Categorical``, ``OneHotCategorical``,
``Bernoulli``) and behaves as it does (support, shapes, ``log_prob``,
``enumerate_support``, ``sample()``, ``expand``, ``.to_event``, ``.mask``),
with the keyword options ``step_size`` (``c >= 0``), ``projection`` (the target)
and ``temperature`` (the midpoint target's), and ``has_rsample = True``:
``rsample()`` returns the exact draw, whose backward is the ILS gradient

.. math:: \nabla_{\mathrm{logits}} = w\,\bigl(\pi - h(z - c\, g / w)\bigr),

where ``g = dL/dz`` and ``w`` is the weight the loss puts on the draw (scale,
subsampling factor and mask of the enclosing Pyro handlers; see
:mod:`pyro_ils.poutine.site_weight`).

Whether a value carries the ILS path decides what ``score_parts`` returns:
a value drawn by ``rsample()`` with gradients enabled is reparameterized (no
score-function term); any other value (from ``poutine.condition``,
enumeration, ``torch.no_grad()``, replay of a plain tensor) keeps the base
class's score-function parts, so enumeration and REINFORCE still work.
"""

from __future__ import annotations

from pyro.distributions import Bernoulli, Categorical, OneHotCategorical

from pyro_ils.distributions.surrogate import (
    SurrogateBernoulliMixin,
    SurrogateCategoricalMixin,
    SurrogateDistributionMixin,
    SurrogateIndependent,
    SurrogateOneHotMixin,
)
from pyro_ils.estimators.ils import ILS
from pyro_ils.options import check_ils_temperature, check_options

__all__ = ["ILSCategorical", "ILSOneHotCategorical", "ILSBernoulli", "ILSDistributionMixin"]

#: ``.to_event()`` of an ILS distribution (kept under its former name).
ILSIndependent = SurrogateIndependent


class ILSDistributionMixin(SurrogateDistributionMixin):
    """The ILS options, ``step_size``, ``projection`` and ``temperature``, and the
    ILS backward."""

    step_size: float
    projection: str
    temperature: float
    _option_names = ("step_size", "projection", "temperature")

    def __init__(
        self,
        probs=None,
        logits=None,
        validate_args=None,
        *,
        step_size: float | None = None,
        projection: str | None = None,
        temperature: float | None = None,
    ):
        self.step_size, self.projection = check_options(step_size, projection)
        self.temperature = check_ils_temperature(temperature, self.projection)
        self._init_surrogate(logits)
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    def with_options(self, step_size=None, projection=None, temperature=None):
        """A copy with other ILS options. ``None`` keeps the current one; a new
        ``projection`` without a ``step_size`` takes that target's default step, and
        one other than ``"midpoint"`` resets the temperature to 1."""
        new = self.expand(self.batch_shape)
        if step_size is None and projection is None:
            step_size = self.step_size
        new.step_size, new.projection = check_options(
            step_size, self.projection if projection is None else projection
        )
        if temperature is None:
            temperature = self.temperature if new.projection == self.projection else None
        new.temperature = check_ils_temperature(temperature, new.projection)
        return new

    @property
    def estimator(self) -> ILS:
        """The :class:`~pyro_ils.estimators.ILS` estimator of these options."""
        return ILS._checked(self.step_size, self.projection, self.temperature)

    @estimator.setter
    def estimator(self, estimator) -> None:
        if not isinstance(estimator, ILS):
            raise TypeError(
                f"{type(self).__name__} takes an ILS estimator, got {estimator!r}; "
                "use SurrogateCategorical & co. for other estimators"
            )
        self.step_size, self.projection = estimator.step_size, estimator.projection
        self.temperature = estimator.temperature


class ILSCategorical(ILSDistributionMixin, SurrogateCategoricalMixin, Categorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the ILS backward.

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.SurrogateIndexTensor`
    equal to a ``Categorical`` draw (the same value as ``sample()`` under the
    same RNG state), differentiable through indexing (``locs[z]``,
    ``Vindex``, ``gather``, ``index_select``, ``F.embedding``, ``F.one_hot``,
    ``Categorical.log_prob``). Non-indexing operations carry no gradient.

    Example::

        pyro.sample("z", ILSCategorical(logits=logits))   # was dist.Categorical

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float step_size: ILS step ``c >= 0``; ``None`` (default) gives the
        target's default: ``0`` (the small-step limit) for the second-order targets,
        1.0 otherwise.
    :param str projection: the target: ``"midpoint"`` (default; the second-order
        target, whose limit ``c = 0`` is ReinMax's estimator at temperature 1),
        ``"midpoint_scaled"`` (its difference divided by ``c``), ``"euclidean"`` and
        ``"normalize"`` (the proposal's step from the drawn vertex), ``"mirror"``,
        ``"mirror_rms"`` (entropic steps from ``pi``), or
        ``"reference"`` (the original code's incorrect gradient, for comparison);
        see :func:`~pyro_ils.ops.projections.intermediate_target`.
    :param float temperature: the second-order targets' temperature ``tau > 0``
        (``None``: 1; those targets only). It moves the midpoint to
        ``(softmax(logits / tau) + z) / 2``, so that at ``c = 0`` the backward is
        ReinMax's at temperature ``tau``.
    """


class ILSOneHotCategorical(ILSDistributionMixin, SurrogateOneHotMixin, OneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the ILS backward.

    ``rsample()`` returns the float one-hot draw; ``ILSOneHotCategorical(logits=L,
    step_size=c, projection=h).rsample()`` behaves as
    :func:`~pyro_ils.ils_onehot` ``(L, c, h)``. ``log_prob(value)`` is
    differentiable in ``value`` as the contraction ``<value, log pi>``.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float step_size: as for :class:`ILSCategorical`.
    :param str projection: as for :class:`ILSCategorical`.
    :param float temperature: as for :class:`ILSCategorical`.
    """


class ILSBernoulli(ILSDistributionMixin, SurrogateBernoulliMixin, Bernoulli):
    r"""A :class:`~pyro.distributions.Bernoulli` whose draws carry the ILS backward.

    The two-category case of ILS on the categories ``(0, 1)`` with logits
    ``(0, a)``: ``rsample()`` returns ``b`` in {0., 1.} exactly, and the logit
    ``a`` receives ``w (sigmoid(a) - pi_D[1])`` with
    ``pi_D = h((1 - b, b) - c (0, dL/db) / w)``.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float step_size: as for :class:`ILSCategorical`.
    :param str projection: as for :class:`ILSCategorical`.
    :param float temperature: as for :class:`ILSCategorical`.
    """
