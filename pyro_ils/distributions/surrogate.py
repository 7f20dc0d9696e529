r"""Discrete distributions whose exact draws carry a surrogate backward.

ILS is one member of a family of estimators that draw ``z`` exactly and give the
logits a *surrogate* gradient from ``g = dL/dz`` (straight-through and ReinMax
are others). This module holds what the family shares, so that each estimator
is one object, an :class:`~pyro_ils.estimators.Estimator` held as ``estimator``:

* ``has_rsample = True``; ``rsample()`` returns the exact draw (an
  :class:`~pyro_ils.ops.index_tensor.ILSIndexTensor` for ``Categorical``, the float
  one-hot for ``OneHotCategorical``) carrying the surrogate backward;
* ``score_parts`` are reparameterized only for a value drawn by this very
  distribution with gradients on; any other value (``poutine.condition``,
  replay of an earlier draw, enumeration, ``torch.no_grad()``) keeps the base
  class's score-function parts;
* ``log q`` of such a draw acts only through the draw ("sticking the landing",
  Roeder et al. 2017): ``score_parts.entropy_term`` is ``log_prob`` with the
  parameters detached. This holds for every estimator, straight-through and ReinMax
  included, not only ILS; the ILS ELBOs' ``guide_log_prob="full"`` turns it off for
  the sites they route, as Pyro treats reparameterized sites;
* ``expand``, ``.to_event`` and ``.mask`` keep the class and its options, and
  the mask also zeroes the surrogate gradient of masked-out draws;
* the weight ``w`` that the loss puts on each draw (scale, subsampling, mask,
  ``1 / num_particles``; see :mod:`pyro_ils.poutine.site_weight`) is passed to the
  estimator, aligned with the draw's batch dimensions also under ``.to_event``.
"""

from __future__ import annotations

import itertools

import torch
from pyro.distributions import Bernoulli, Categorical, Independent, OneHotCategorical
from pyro.distributions.score_parts import ScoreParts
from pyro.distributions.util import sum_rightmost
from pyro.ops.provenance import extract_provenance, track_provenance
from torch import Tensor

from pyro_ils.ops.index_tensor import ILSIndexTensor, carries_ils_path, link_gradient
from pyro_ils.ops.softmax import finite
from pyro_ils.poutine.site_weight import current_site_weight, event_dims

__all__ = [
    "SurrogateDistributionMixin",
    "SurrogateCategoricalMixin",
    "SurrogateOneHotMixin",
    "SurrogateBernoulliMixin",
    "SurrogateIndependent",
    "drawn_by",
]

#: Tokens that tie a draw to the distribution instance that made it.
_TOKENS = itertools.count(1)


def unwrap_provenance(value):
    """The value without Pyro's provenance wrapper (TraceGraph_ELBO adds one)."""
    return extract_provenance(value)[0] if isinstance(value, Tensor) else value


def drawn_by(value, fn) -> bool:
    """Whether ``value`` carries a surrogate path made by ``fn.rsample()``."""
    value = unwrap_provenance(value)
    token = fn.__dict__.get("_draw_token")
    return (
        token is not None
        and isinstance(value, Tensor)
        and value.__dict__.get("_draw_token") == token
        and carries_ils_path(value)
    )


class SurrogateDistributionMixin:
    """What the exact-draw, surrogate-backward distributions share.

    The estimator is ``self.estimator``; a subclass that keeps other attributes names
    them in ``_option_names`` (copied by ``expand``), and implements
    ``_detached_params`` (the distribution with detached parameters whose
    ``log_prob`` the guide term uses).
    """

    has_rsample = True
    #: Attributes holding the estimator or its options, copied by ``expand``.
    _option_names: tuple[str, ...] = ("estimator",)
    #: Whether the backward goes to the user's logits before the base class
    #: normalizes them (Bernoulli logits are not normalized).
    _keeps_raw_logits = True

    def _init_surrogate(self, logits) -> None:
        self._grad_mask = None
        self._stl = True
        self._raw_logits = logits if self._keeps_raw_logits else None

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        new = super().expand(batch_shape, _instance=new)
        return self._copy_surrogate(new)

    def _copy_surrogate(self, new):
        for name in self._option_names:
            setattr(new, name, getattr(self, name))
        new._grad_mask = self._grad_mask
        new._stl = self._stl
        raw = self._raw_logits
        if raw is not None and raw.shape[:-1] != new.batch_shape:
            raw = raw.expand(new.batch_shape + raw.shape[-1:])
        new._raw_logits = raw
        return new

    def _surrogate_logits(self) -> Tensor:
        return self.logits if self._raw_logits is None else self._raw_logits

    def to_event(self, reinterpreted_batch_ndims=None):
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if reinterpreted_batch_ndims == 0:
            return self
        return SurrogateIndependent(self, reinterpreted_batch_ndims)

    def mask(self, mask):
        # The mask also weights the backward: masked-out draws get no gradient.
        new = self.expand(self.batch_shape)
        if not isinstance(mask, bool):
            new._grad_mask = mask if self._grad_mask is None else self._grad_mask & mask
        elif not mask:
            new._grad_mask = torch.zeros((), dtype=torch.bool)
        return super(SurrogateDistributionMixin, new).mask(mask)

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
        # Handler scales and masks broadcast against the site's log_prob, whose
        # rightmost dims are the batch dims left after .to_event: align them
        # with the draw's batch dims.
        n = event_dims()
        if n and weight.dim():
            weight = weight.reshape(weight.shape + (1,) * n)
        if self._grad_mask is not None:
            weight = weight * torch.as_tensor(self._grad_mask, device=device).to(dtype)
        return weight

    def _path_wanted(self, param: Tensor) -> bool:
        if torch._C._get_tracing_state():
            raise NotImplementedError(
                f"{type(self).__name__}.rsample() cannot be traced by the JIT "
                "(JitTrace_ELBO, torch.jit.trace): its backward is a Python function "
                "that the trace would not record. Use the non-JIT ELBO."
            )
        return torch.is_grad_enabled() and param.requires_grad

    def _tag(self, value: Tensor, provenance: frozenset) -> Tensor:
        """Mark ``value`` as this distribution's draw; keep the logits' provenance."""
        token = self.__dict__.get("_draw_token")
        if token is None:
            token = self._draw_token = next(_TOKENS)
        value._draw_token = token
        return track_provenance(value, provenance)

    def with_estimator(self, estimator):
        """A copy whose draws carry ``estimator``'s backward (same class family: an ILS
        distribution takes :class:`~pyro_ils.estimators.ILS` only)."""
        new = self.expand(self.batch_shape)
        new.estimator = estimator
        return new

    def _surrogate_onehot(self, logits, index, support, weight) -> Tensor:
        """The one-hot of ``index`` whose backward sends the estimator's gradient to ``logits``.

        :param logits: the distribution's logits, broadcasting to ``index.shape + (K,)``.
        :param index: the drawn categories (int64).
        :param support: boolean mask of the categories that may be drawn, or ``None``.
        :param weight: the weight of each draw in the loss, broadcasting to ``index.shape``.
        """
        return self.estimator.onehot(logits, index, support, weight)

    def _rsample_onehot(self, sample_shape, index_of, wrap) -> Tensor:
        """The base class's exact draw, carrying the backward where a path is wanted.

        :param index_of: maps a draw to its drawn categories (int64).
        :param wrap: ``wrap(draw, onehot)``, the value returned for a draw and its
            one-hot carrying the estimator's backward.
        """
        logits, provenance = extract_provenance(self._surrogate_logits())
        drawn = unwrap_provenance(super().sample(sample_shape))
        if not self._path_wanted(logits):
            return track_provenance(drawn, provenance)
        onehot = self._surrogate_onehot(
            logits,
            index_of(drawn),
            self._support_mask(),
            self._draw_weight(logits.dtype, logits.device),
        )
        return self._tag(wrap(drawn, onehot), provenance)

    def score_parts(self, value):
        log_prob = self.log_prob(value)
        if not drawn_by(value, self):
            return ScoreParts(log_prob=log_prob, score_function=log_prob, entropy_term=0)
        entropy_term = log_prob
        if self._stl:
            # "Sticking the landing": the guide term sends its gradient only
            # through the draw, not d log q / d theta at fixed z.
            entropy_term = self._detached_log_prob(value)
        return ScoreParts(log_prob=log_prob, score_function=0, entropy_term=entropy_term)

    def _detached_params(self):
        raise NotImplementedError

    def _detached_log_prob(self, value) -> Tensor:
        """``log_prob(value)`` with the parameters detached (the value keeps its path)."""
        return self._detached_params().log_prob(value)


class SurrogateCategoricalMixin(SurrogateDistributionMixin):
    """``Categorical`` draws as int64 :class:`~pyro_ils.ops.index_tensor.ILSIndexTensor`."""

    def rsample(self, sample_shape=torch.Size()):
        return self._rsample_onehot(sample_shape, lambda index: index, ILSIndexTensor)

    def log_prob(self, value):
        if self._validate_args and isinstance(value, Tensor) and value.is_floating_point():
            raise ValueError(
                f"{type(self).__name__}.log_prob expects integer category indices, "
                f"got a {value.dtype} tensor"
            )
        return super().log_prob(value)

    def _detached_params(self):
        return Categorical(logits=self.logits.detach(), validate_args=False)

    def _detached_log_prob(self, value) -> Tensor:
        # Categorical.log_prob on the already normalized logits, detached, without
        # building (and renormalizing) a new distribution.
        index = value.long().unsqueeze(-1)
        index, log_pmf = torch.broadcast_tensors(index, self.logits.detach())
        return log_pmf.gather(-1, index[..., :1]).squeeze(-1)


def onehot_log_prob(log_prob: Tensor, value: Tensor, logits: Tensor) -> Tensor:
    """``log_prob`` of a one-hot ``value``, differentiable in ``value`` as ``<value, logits>``."""
    if not (isinstance(value, Tensor) and value.requires_grad):
        return log_prob
    logits = finite(logits.detach())
    return link_gradient(
        log_prob,
        value,
        lambda grad_out: (grad_out.unsqueeze(-1) * logits).sum_to_size(value.shape),
    )


class SurrogateOneHotMixin(SurrogateDistributionMixin):
    """``OneHotCategorical`` draws as float one-hots; ``log_prob`` differentiable in the value."""

    def rsample(self, sample_shape=torch.Size()):
        return self._rsample_onehot(
            sample_shape, lambda value: value.argmax(-1), lambda value, onehot: onehot
        )

    def log_prob(self, value):
        return onehot_log_prob(super().log_prob(value), value, self.logits)

    def _detached_params(self):
        return _ValueDifferentiableOneHot(logits=self.logits.detach(), validate_args=False)


class _ValueDifferentiableOneHot(OneHotCategorical):
    """A ``OneHotCategorical`` whose ``log_prob`` is differentiable in the value."""

    def log_prob(self, value):
        return onehot_log_prob(super().log_prob(value), value, self.logits)


class SurrogateBernoulliMixin(SurrogateDistributionMixin):
    """``Bernoulli`` draws in {0., 1.}: the two-category case of the estimator, on the
    categories ``(0, 1)`` with logits ``(0, a)``."""

    _keeps_raw_logits = False

    def rsample(self, sample_shape=torch.Size()):
        logits, provenance = extract_provenance(self.logits)
        drawn = super().sample(sample_shape)
        if not self._path_wanted(logits):
            return drawn
        weight = self._draw_weight(logits.dtype, logits.device)
        value = self.estimator.bernoulli(logits, unwrap_provenance(drawn), weight)
        return self._tag(value, provenance)

    def _detached_params(self):
        return Bernoulli(logits=self.logits.detach(), validate_args=False)


class SurrogateIndependent(Independent):
    """``Independent`` over a surrogate distribution.

    Forwards ``score_parts`` (so values that the base did not draw keep their
    score-function term under ``.to_event`` too), tells the base how many batch
    dims were reinterpreted (so that handler weights align with the draw), and
    applies ``.mask`` to the base (so that masked-out draws get no gradient).
    """

    def rsample(self, sample_shape=torch.Size()):
        with event_dims(self.reinterpreted_batch_ndims):
            return super().rsample(sample_shape)

    def score_parts(self, value):
        parts = self.base_dist.score_parts(value)
        n = self.reinterpreted_batch_ndims
        return ScoreParts(*(sum_rightmost(p, n) if isinstance(p, Tensor) else p for p in parts))

    def mask(self, mask):
        n = self.reinterpreted_batch_ndims
        if not isinstance(mask, bool):
            mask = mask.reshape(mask.shape + (1,) * n)
        return SurrogateIndependent(self.base_dist.mask(mask), n)
