r"""``TraceRELAX_ELBO``: REBAR with a learned control variate (Grathwohl et al. 2018).

The estimator, its math and its references are in :mod:`pyro_ils.infer.trace_rebar_elbo`,
whose :class:`~pyro_ils.infer.trace_rebar_elbo.TraceREBAR_ELBO` this subclasses.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import sum_rightmost
from torch import Tensor, nn

from pyro_ils.distributions.util import base_of
from pyro_ils.infer.multi_eval import (
    ONEHOT,
    discrete_site_kind,
)
from pyro_ils.infer.trace_rebar_elbo import TraceREBAR_ELBO

__all__ = ["TraceRELAX_ELBO"]


class _SiteNets(nn.Module):
    r"""RELAX's default free-form part :math:`r_\phi`: a small MLP per discrete site,
    applied to each relaxed draw (the category dim of a one-hot site, a scalar for
    a Bernoulli site) and summed over ``to_event`` dims, so that each plate element
    keeps its own term and the plate-wise Rao-Blackwellization stays valid."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.hidden = hidden
        self.nets = nn.ModuleDict()
        self._keys: dict[str, str] = {}

    def _net(self, name: str, features: int, like: Tensor) -> nn.Module:
        key = self._keys.setdefault(name, f"site{len(self._keys)}")
        if key not in self.nets:
            net = nn.Sequential(
                nn.Linear(features, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1)
            )
            self.nets[key] = net.to(dtype=like.dtype, device=like.device)
        return self.nets[key]

    def forward(self, zetas: dict[str, Tensor], sites) -> dict[str, Tensor]:
        out = {}
        for name, site in sites:
            zeta, fn = zetas[name], site["fn"]
            onehot = discrete_site_kind(fn) == ONEHOT
            x = zeta if onehot else zeta.unsqueeze(-1)
            r = self._net(name, x.shape[-1], zeta)(x).squeeze(-1)
            out[name] = sum_rightmost(r, fn.event_dim - base_of(fn).event_dim)
        return out


class TraceRELAX_ELBO(TraceREBAR_ELBO):
    r"""RELAX (Grathwohl et al. 2018, "Backpropagation through the void:
    Optimizing control variates for black-box gradient estimation") for discrete
    sites: REBAR's estimator with the learned control variate
    :math:`c_\phi(\zeta) = \eta \bar f(\zeta) + r_\phi(\zeta)`, all of
    :math:`\eta`, :math:`\lambda`, :math:`\phi` trained at every
    ``loss_and_grads`` by one Adam step on the single-sample variance
    surrogate :math:`\|\hat g\|^2` (its gradient needs ``create_graph=True``).
    See the module docstring.

    **Cost:** 3 objective evaluations per particle (plus the network).

    :param control_variate: :math:`r_\phi`, a ``torch.nn.Module`` called as
        ``control_variate(zetas)`` with ``zetas`` a dict from each discrete guide
        site's name to its relaxed value :math:`\sigma_\lambda(z)` (the site's
        value shape). It returns either a scalar tensor (one term for the whole
        particle set) or a dict from site names to tensors broadcastable to each
        site's batch shape (a term per plate element; element ``n`` must depend
        only on the plate element ``n`` of the sites sharing that plate, for the
        plate-wise Rao-Blackwellization to stay unbiased). ``None``: a small MLP
        per site (16 tanh units), applied to each relaxed draw.
    :param float temperature: initial :math:`\lambda > 0`.
    :param float eta: initial :math:`\eta`.
    :param float tune_lr: Adam learning rate for :math:`\eta, \lambda, \phi`.
    :param int hidden: hidden units of the default network.
    :param elbo_kwargs: passed to :class:`~pyro.infer.Trace_ELBO`.
    """

    def __init__(
        self,
        control_variate: torch.nn.Module | None = None,
        temperature: float = 0.5,
        eta: float = 1.0,
        tune_lr: float = 1e-3,
        hidden: int = 16,
        **elbo_kwargs,
    ) -> None:
        if "tune" in elbo_kwargs:
            raise ValueError("TraceRELAX_ELBO always trains its control variate (no `tune`)")
        if control_variate is not None and not isinstance(control_variate, nn.Module):
            raise ValueError(
                f"control_variate must be a torch.nn.Module or None, got {type(control_variate)}"
            )
        super().__init__(
            temperature=temperature, eta=eta, tune=True, tune_lr=tune_lr, **elbo_kwargs
        )
        self._default_cv = control_variate is None
        self.control_variate: nn.Module = (
            _SiteNets(hidden) if control_variate is None else (control_variate)
        )

    def tuned_parameters(self) -> list[Tensor]:
        return super().tuned_parameters() + list(self.control_variate.parameters())

    def _extra_control_variate(self, zetas, sites, stacks) -> list[tuple]:
        if self._default_cv:
            out = self.control_variate(zetas, sites)
        else:
            out = self.control_variate(dict(zetas))
        if isinstance(out, dict):
            unknown = set(out) - set(zetas)
            if unknown:
                raise ValueError(f"control_variate returned terms for unknown sites {unknown}")
            return [(stacks[name], term) for name, term in out.items()]
        if not torch.is_tensor(out) or out.numel() != 1:
            raise ValueError(
                "control_variate must return a scalar tensor or a dict of per-site tensors, got "
                f"{type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}"
            )
        return [((), out.reshape(()))]
