"""``ILSReparam``: per-site opt-in to ILS through ``poutine.reparam``."""

from __future__ import annotations

from pyro.infer.reparam.reparam import Reparam

from pyro_ils.estimators import Estimator
from pyro_ils.options import check_options, check_projection, check_step_size
from pyro_ils.poutine.routing import to_ils, to_surrogate

__all__ = ["ILSReparam"]


class ILSReparam(Reparam):
    """Reparameterize a discrete site so that its draw carries the ILS backward, or
    that of any estimator of :mod:`pyro_ils.estimators`.

    For users who write their own loss, or who want ILS at a few sites only::

        guide = poutine.reparam(guide, config={"z": ILSReparam(step_size=0.5)})
        guide = poutine.reparam(guide, config={"z": ILSReparam(estimator=ReinMax(1.5))})

    Works on ``Categorical``, ``OneHotCategorical`` and ``Bernoulli`` sites,
    also inside ``Independent``, masked and expanded wrappers. The draw is
    weighted by the enclosing handlers' scale and mask as with the ILS ELBOs;
    with several particles, a loss other than the ILS ELBOs does not tell the
    draw its ``1 / num_particles`` weight (the step then acts as ``c / P``).

    :param float step_size: ILS step ``c``; ``None`` keeps an ILS
        distribution's own, or the default 1.0.
    :param str projection: map onto the simplex; ``None`` as above.
    :param Estimator estimator: the estimator instead of the ILS options (keyword only).
    :raises TypeError: at a site whose distribution has no version with an estimator.
    """

    def __init__(
        self,
        step_size: float | None = None,
        projection: str | None = None,
        *,
        estimator: Estimator | None = None,
    ):
        if estimator is not None and not isinstance(estimator, Estimator):
            raise TypeError(
                f"estimator must be an object of pyro_ils.estimators, got {estimator!r}"
            )
        if estimator is not None and (step_size is not None or projection is not None):
            raise ValueError("give either estimator= or step_size/projection, not both")
        self.estimator = estimator
        if step_size is not None and projection is not None:
            self.step_size, self.projection = check_options(step_size, projection)
        else:
            self.step_size = None if step_size is None else check_step_size(step_size)
            self.projection = None if projection is None else check_projection(projection)

    def apply(self, msg):
        fn = msg["fn"]
        if msg["is_observed"]:
            return {"fn": fn, "value": msg["value"], "is_observed": True}
        if self.estimator is not None:
            new = to_surrogate(fn, self.estimator)
        else:
            new = to_ils(fn, self.step_size, self.projection)
        if new is None:
            raise TypeError(
                f"ILSReparam at site {msg['name']!r}: {type(fn).__name__} has no ILS version "
                "(supported: Categorical, OneHotCategorical, Bernoulli)"
            )
        return {"fn": new, "value": msg["value"], "is_observed": False}
