r"""Drop-in discrete distributions whose ``rsample()`` carries the ILS backward.

Each class subclasses Pyro's own (``Categorical``, ``OneHotCategorical``,
``Bernoulli``) and behaves as it does (support, shapes, ``log_prob``,
``enumerate_support``, ``sample()``, ``expand``, ``.to_event``, ``.mask``),
with two keyword options, ``step_size`` (``c > 0``) and ``projection``
(``"euclidean"``, ``"normalize"``, ``"reference"``), and ``has_rsample = True``:
``rsample()`` returns the exact draw, whose backward is the ILS gradient

.. math:: \nabla_{\mathrm{logits}} = w\,\bigl(\pi - h(z - c\, g / w)\bigr),

where ``g = dL/dz`` and ``w`` is the weight the loss puts on the draw (scale,
subsampling factor and mask of the enclosing Pyro handlers; see
:mod:`pyro_ils.site_weight`).

Whether a value carries the ILS path decides what ``score_parts`` returns:
a value drawn by ``rsample()`` with gradients enabled is reparameterized (no
score-function term); any other value (from ``poutine.condition``,
enumeration, ``torch.no_grad()``, replay of a plain tensor) keeps the base
class's score-function parts, so enumeration and REINFORCE still work.
"""

from __future__ import annotations

import torch
from pyro.distributions import Bernoulli, Categorical, Independent, OneHotCategorical
from pyro.distributions.score_parts import ScoreParts
from pyro.distributions.util import sum_rightmost
from torch import Tensor

from .ils import finite, ils_bernoulli_from_draw, ils_onehot_from_index
from .index_tensor import ILSIndexTensor, carries_ils_path, link_gradient
from .options import DEFAULT_PROJECTION, DEFAULT_STEP_SIZE, check_options
from .site_weight import current_site_weight

__all__ = ["ILSCategorical", "ILSOneHotCategorical", "ILSBernoulli", "ILSDistributionMixin"]


class ILSDistributionMixin:
    """Options and shared behaviour of the ILS distributions."""

    has_rsample = True
    step_size: float
    projection: str

    #: Whether the ILS backward goes to the user's logits before the base class
    #: normalizes them (it matters for the "reference" mode, whose gradient
    #: does not sum to zero). Bernoulli logits are not normalized.
    _keeps_raw_logits = True

    def __init__(
        self,
        probs=None,
        logits=None,
        validate_args=None,
        *,
        step_size: float = DEFAULT_STEP_SIZE,
        projection: str = DEFAULT_PROJECTION,
    ):
        self.step_size, self.projection = check_options(step_size, projection)
        self._grad_mask = None
        self._stl = True
        self._raw_logits = logits if self._keeps_raw_logits else None
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        new = super().expand(batch_shape, _instance=new)
        return self._copy_ils(new)

    def _copy_ils(self, new):
        new.step_size = self.step_size
        new.projection = self.projection
        new._grad_mask = self._grad_mask
        new._stl = self._stl
        raw = self._raw_logits
        if raw is not None and raw.shape[:-1] != new.batch_shape:
            raw = raw.expand(new.batch_shape + raw.shape[-1:])
        new._raw_logits = raw
        return new

    def _ils_logits(self) -> Tensor:
        return self.logits if self._raw_logits is None else self._raw_logits

    def to_event(self, reinterpreted_batch_ndims=None):
        # Pyro's Independent has no score_parts of its own; ILSIndependent
        # forwards to this distribution's, so that values without the ILS
        # path keep their score-function term under .to_event too.
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if reinterpreted_batch_ndims == 0:
            return self
        return ILSIndependent(self, reinterpreted_batch_ndims)

    def with_options(self, step_size=None, projection=None):
        """A copy with other ILS options (``None`` keeps the current one)."""
        new = self.expand(self.batch_shape)
        new.step_size, new.projection = check_options(
            self.step_size if step_size is None else step_size,
            self.projection if projection is None else projection,
        )
        return new

    def mask(self, mask):
        # The mask also weights the ILS backward: masked-out draws get no gradient.
        new = self.expand(self.batch_shape)
        if not isinstance(mask, bool):
            new._grad_mask = mask if self._grad_mask is None else self._grad_mask & mask
        elif not mask:
            new._grad_mask = torch.zeros((), dtype=torch.bool)
        return super(ILSDistributionMixin, new).mask(mask)

    def _support_mask(self) -> Tensor | None:
        """Categories that may be drawn, or ``None`` when all may."""
        # Check the parameter the user gave (probs may hold exact zeros; logits
        # computed from them are clamped), without computing the other one.
        if self._param is self.__dict__.get("probs"):
            support = self._param > 0
        else:
            support = self._param > -torch.inf
        return None if bool(support.all()) else support

    def _draw_weight(self, dtype, device) -> Tensor:
        weight = current_site_weight(dtype, device)
        if self._grad_mask is not None:
            weight = weight * torch.as_tensor(self._grad_mask, device=device).to(dtype)
        return weight

    def _ils_path_wanted(self, param: Tensor) -> bool:
        if torch._C._get_tracing_state():
            raise NotImplementedError(
                f"{type(self).__name__}.rsample() cannot be traced by the JIT "
                "(JitTrace_ELBO, torch.jit.trace): its backward is a Python function "
                "that the trace would not record. Use TraceILS_ELBO (not compiled)."
            )
        return torch.is_grad_enabled() and param.requires_grad

    def score_parts(self, value):
        log_prob = self.log_prob(value)
        if not carries_ils_path(value):
            return ScoreParts(log_prob=log_prob, score_function=log_prob, entropy_term=0)
        entropy_term = log_prob
        if self._stl:
            # "Sticking the landing": the guide term sends its gradient only
            # through the draw, not d log q / d theta at fixed z.
            entropy_term = self._detached_params().log_prob(value)
        return ScoreParts(log_prob=log_prob, score_function=0, entropy_term=entropy_term)

    def _detached_params(self):
        raise NotImplementedError


class ILSCategorical(ILSDistributionMixin, Categorical):
    r"""A :class:`~pyro.distributions.Categorical` whose draws carry the ILS backward.

    ``rsample()`` returns an ``int64`` :class:`~pyro_ils.index_tensor.ILSIndexTensor`
    equal to a ``Categorical`` draw (the same value as ``sample()`` under the
    same RNG state), differentiable through indexing (``locs[z]``,
    ``Vindex``, ``gather``, ``index_select``, ``F.embedding``, ``F.one_hot``,
    ``Categorical.log_prob``). Non-indexing operations carry no gradient.

    Example::

        pyro.sample("z", ILSCategorical(logits=logits))   # was dist.Categorical

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float step_size: ILS step ``c > 0`` (default 1.0).
    :param str projection: ``"euclidean"`` (default), ``"normalize"`` or
        ``"reference"`` (the original code's incorrect gradient, for comparison).
    """

    def rsample(self, sample_shape=torch.Size()):
        index = super().sample(sample_shape)
        logits = self._ils_logits()
        if not self._ils_path_wanted(logits):
            return index
        onehot = ils_onehot_from_index(
            logits,
            index,
            step_size=self.step_size,
            projection=self.projection,
            support=self._support_mask(),
            weight=self._draw_weight(logits.dtype, logits.device),
        )
        return ILSIndexTensor(index, onehot)

    def log_prob(self, value):
        if self._validate_args and isinstance(value, Tensor) and value.is_floating_point():
            raise ValueError(
                f"{type(self).__name__}.log_prob expects integer category indices, "
                f"got a {value.dtype} tensor"
            )
        return super().log_prob(value)

    def _detached_params(self):
        return Categorical(logits=self.logits.detach(), validate_args=False)


class ILSOneHotCategorical(ILSDistributionMixin, OneHotCategorical):
    r"""A :class:`~pyro.distributions.OneHotCategorical` whose draws carry the ILS backward.

    ``rsample()`` returns the float one-hot draw; ``ILSOneHotCategorical(logits=L,
    step_size=c, projection=h).rsample()`` behaves as
    :func:`~pyro_ils.ils_onehot` ``(L, c, h)``. ``log_prob(value)`` is
    differentiable in ``value`` as the contraction ``<value, log pi>``.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float step_size: ILS step ``c > 0`` (default 1.0).
    :param str projection: ``"euclidean"`` (default), ``"normalize"`` or
        ``"reference"`` (the original code's incorrect gradient, for comparison).
    """

    def rsample(self, sample_shape=torch.Size()):
        value = super().sample(sample_shape)
        logits = self._ils_logits()
        if not self._ils_path_wanted(logits):
            return value
        return ils_onehot_from_index(
            logits,
            value.argmax(-1),
            step_size=self.step_size,
            projection=self.projection,
            support=self._support_mask(),
            weight=self._draw_weight(logits.dtype, logits.device),
        )

    def log_prob(self, value):
        out = super().log_prob(value)
        if not (isinstance(value, Tensor) and value.requires_grad):
            return out
        logits = self.logits.detach()
        return link_gradient(
            out,
            value,
            lambda grad_out: (grad_out.unsqueeze(-1) * finite(logits)).sum_to_size(value.shape),
        )

    def _detached_params(self):
        # An ILS distribution, whose log_prob is differentiable in the value.
        return ILSOneHotCategorical(logits=self.logits.detach(), validate_args=False)


class ILSBernoulli(ILSDistributionMixin, Bernoulli):
    r"""A :class:`~pyro.distributions.Bernoulli` whose draws carry the ILS backward.

    The two-category case of ILS on the categories ``(0, 1)`` with logits
    ``(0, a)``: ``rsample()`` returns ``b`` in {0., 1.} exactly, and the logit
    ``a`` receives ``w (sigmoid(a) - pi_D[1])`` with
    ``pi_D = h((1 - b, b) - c (0, dL/db) / w)``.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class (follows ``pyro.enable_validation``).
    :param float step_size: ILS step ``c > 0`` (default 1.0).
    :param str projection: ``"euclidean"`` (default), ``"normalize"`` or
        ``"reference"`` (the original code's incorrect gradient, for comparison).
    """

    _keeps_raw_logits = False

    def rsample(self, sample_shape=torch.Size()):
        value = super().sample(sample_shape)
        logits = self.logits
        if not self._ils_path_wanted(logits):
            return value
        return ils_bernoulli_from_draw(
            logits,
            value,
            step_size=self.step_size,
            projection=self.projection,
            weight=self._draw_weight(logits.dtype, logits.device),
        )

    def _detached_params(self):
        return Bernoulli(logits=self.logits.detach(), validate_args=False)


class ILSIndependent(Independent):
    """``Independent`` over an ILS distribution, forwarding ``score_parts``."""

    def score_parts(self, value):
        parts = self.base_dist.score_parts(value)
        n = self.reinterpreted_batch_ndims
        return ScoreParts(*(sum_rightmost(p, n) if isinstance(p, Tensor) else p for p in parts))
