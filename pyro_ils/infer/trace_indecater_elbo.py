r"""IndeCateR (the CatLog-derivative trick for independent categorical dimensions) as a
Pyro ELBO: a named configuration of :class:`~pyro_ils.TraceILSDiff_ELBO`.

De Smet, Sansone and Zuidberg Dos Martires (2023), "Differentiable Sampling of
Categorical Distributions Using the CatLog-Derivative Trick", NeurIPS.

For :math:`q(x) = \prod_{d=1}^D q_d(x_d)` with categorical :math:`x_d \in \{1, \dots,
K_d\}` and :math:`N` draws :math:`x^{(1)}, \dots, x^{(N)} \sim q`, IndeCateR estimates

.. math::

    \nabla_\phi E_q[f(x)] \approx \frac1N \sum_{n=1}^N \sum_{d=1}^D \sum_{k=1}^{K_d}
    \nabla_\phi q_d(k)\; f\bigl(x^{(n)}_{\ne d},\, x_d = k\bigr),

every dimension of every draw summed exactly over its own categories while the other
dimensions keep their draw. Here :math:`f = \log p_\theta(x, z) - \log q_\phi(z)`, the
ELBO integrand, held fixed in :math:`\phi` (as Pyro's score-function term holds it: the
dependence of :math:`-\log q_\phi` on :math:`\phi` at a fixed draw has expectation zero).

**The equivalence.** With :math:`q_d = \mathrm{softmax}(a_d)`, :math:`\partial q_d(k) /
\partial a_d = q_d(k) (e_k - q_d)`, so the estimate's gradient of the logits of
dimension :math:`d` is :math:`q_d \odot (f_d - \langle q_d, f_d \rangle)` with
:math:`f_{d,k} = f(x_{\ne d}, x_d = k)`. That is the gradient
:class:`~pyro_ils.TraceILSDiff_ELBO` gives each element of a routed site at
``step_size=0`` with ``projection="mirror"`` (its small-step limit :math:`w\, \pi \odot
(g - \langle \pi, g \rangle)` with :math:`w g = d`, the exact differences
:math:`d_k = -(f_{d,k} - f_{d, x_d})`, and the shift by :math:`f_{d, x_d}` cancelling),
provided that

* ``analytic_kl=False``: :math:`f_d` then holds the site's own :math:`\log p - \log q`
  (with the analytic KL the logits' gradient is the same, since :math:`\sum_k \nabla
  q(k) \log(p(k) / q(k)) = -\nabla \mathrm{KL}(q \| p)`, but the model's prior
  parameters get the exact KL gradient instead of the one at the draw);
* ``rao_blackwellize=False``: the model's parameters and the reparameterized sites get
  the pathwise gradient at the draw, as in the paper (with it they get the average
  over the alternatives evaluated anyway, which is unbiased with less variance);
* the guide is mean field over the routed sites (the paper's independent dimensions):
  ``TraceILSDiff_ELBO`` would otherwise draw the later sites again under each
  alternative (the local expectation gradient of a structured guide, Titsias and
  Lazaro-Gredilla 2015), which the paper's formula does not cover. ``mean_field=True``
  (the default here) checks this at the first step and raises ``ValueError`` for a
  guide that is not mean field.

Each "dimension" :math:`d` is one element of a site's draw (a batch or ``.to_event``
element); where a plate splits the terms (every term after the site lies in it), all of
its elements are changed in the same run, each difference read from its own plate
element's terms, which is :math:`f_{d,k}` up to terms that do not depend on
:math:`x_d` under the plate's conditional independence. ``num_samples`` is
:math:`N` (Pyro's ``num_particles``). Per-site options in ``infer={"ils": ...}``
apply as in :class:`~pyro_ils.TraceILSDiff_ELBO`; leave them unset for IndeCateR.

**Scope.** Latent ``Categorical``, ``OneHotCategorical`` and ``Bernoulli`` guide sites
(in ``Independent``, masked and expanded wrappers); the model and guide must broadcast
over a new dim left of the plates, as for ``TraceEnum_ELBO``.

**Cost:** per draw, one run of the model and the guide, and one more over the
alternatives: :math:`\sum_d K_d` rows, fewer where a plate splits the terms (its
elements then share their rows); the guide is not run over them once the mean-field
check has passed. :func:`~pyro_ils.infer.evaluations.evaluations_per_step` counts them.

References:
    De Smet, L., Sansone, E. and Zuidberg Dos Martires, P. (2023). Differentiable
    sampling of categorical distributions using the CatLog-derivative trick. NeurIPS.

    Titsias, M. K. and Lazaro-Gredilla, M. (2015). Local expectation gradients for
    black box variational inference. NeurIPS.
"""

from __future__ import annotations

from pyro_ils.infer.alternatives import DEFAULT_CHUNK_SIZE
from pyro_ils.infer.trace_ils_diff_elbo import TraceILSDiff_ELBO

__all__ = ["TraceIndeCateR_ELBO"]


class TraceIndeCateR_ELBO(TraceILSDiff_ELBO):
    r"""IndeCateR (De Smet, Sansone and Zuidberg Dos Martires 2023, "Differentiable
    Sampling of Categorical Distributions Using the CatLog-Derivative Trick"):
    :math:`\frac1N \sum_n \sum_d \sum_k \nabla q_d(k)\, f(x^{(n)}_{\ne d}, x_d = k)`.

    Exactly :class:`~pyro_ils.TraceILSDiff_ELBO` with ``step_size=0``,
    ``projection="mirror"``, ``analytic_kl=False``, ``rao_blackwellize=False`` and
    ``num_particles=num_samples`` (see :mod:`pyro_ils.infer.trace_indecater_elbo`
    for the derivation and the conditions).

    :param int num_samples: the number of draws :math:`N`.
    :param bool mean_field: the guide's routed sites are independent (the paper's
        setting; default ``True``, checked at the first step, ``ValueError`` if not).
        ``False`` runs the guide over the alternatives, which for a structured guide
        gives the local expectation gradient instead.
    :param int max_plate_nesting: as for :class:`~pyro_ils.TraceILSDiff_ELBO`.
    :param int chunk_size: as for :class:`~pyro_ils.TraceILSDiff_ELBO`.
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`; ``num_particles``
        may not be given (it is ``num_samples``).
    """

    def __init__(
        self,
        num_samples: int = 1,
        mean_field: bool = True,
        max_plate_nesting: int | None = None,
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        **elbo_kwargs,
    ) -> None:
        if "num_particles" in elbo_kwargs:
            raise ValueError("TraceIndeCateR_ELBO takes num_samples, not num_particles")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        super().__init__(
            step_size=0.0,
            projection="mirror",
            analytic_kl=False,
            rao_blackwellize=False,
            mean_field=mean_field,
            max_plate_nesting=max_plate_nesting,
            chunk_size=chunk_size,
            num_particles=num_samples,
            **elbo_kwargs,
        )
        self.num_samples = num_samples
