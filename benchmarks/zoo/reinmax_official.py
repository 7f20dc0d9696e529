r"""The ReinMax authors' own code, side by side with the plugin's ``ReinMax``: a
benchmark-side adapter, not part of the library.

:class:`OfficialReinMaxOneHotCategorical` is Pyro's ``OneHotCategorical`` whose
``rsample()`` returns the one-hot draw of the official package (``reinmax`` on PyPI,
``from reinmax import reinmax``; Liu et al. 2023), whose backward is the package's: for
``g = dL/dD`` the logits receive

.. math::

    2\, J(\pi_1)^\top g - \tfrac12\, J(\pi_0)^\top g, \qquad
    \pi_0 = \mathrm{softmax}(\theta), \quad
    \pi_1 = \tfrac12 \bigl(D + \mathrm{softmax}(\theta / \tau)\bigr),

centred over the categories, with :math:`J(p)^\top g = p \odot (g - \langle p, g
\rangle)`. The package returns ``(sample, softmax(logits))``; only the sample is used
here, so the gradient the package's backward gives through its second output is zero.
Since each :math:`J(p)^\top g` already sums to zero over the categories, the centring
changes nothing but rounding, and the gradient is the plugin's
``pyro_ils.estimators.ReinMax`` (``ReinMaxOneHotCategorical``) at the same draw, up to
floating-point rounding; under the same torch RNG state both draw the same category
(both call ``torch.multinomial`` on the softmax), which ``tests/test_zoo_peers.py``
checks with the gradients.

What differs from the plugin's class: the package refuses nothing but works on the
last dim of a contiguous view, draws one category per row (so ``sample_shape`` is
drawn by expanding the logits), has no support mask and no masked-draw weight, and
``log_prob`` here is Pyro's (the value's gradient reaches the logits through it, as
for any reparameterized site; the zoo's categorical VAEs take the KL analytically, so
no ``log q`` term is evaluated at the draw).

References:
    Liu, L., Dong, C., Liu, X., Yu, B. and Gao, J. (2023). Bridging discrete and
    backpropagation: straight-through and beyond. NeurIPS. (Package: ``reinmax`` 0.1.0.)
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

__all__ = ["OfficialReinMaxOneHotCategorical"]


class OfficialReinMaxOneHotCategorical(dist.OneHotCategorical):
    """``OneHotCategorical`` whose ``rsample()`` is ``reinmax.reinmax(logits, tau)[0]``.

    :param probs: event probabilities, as for the base class.
    :param logits: event log-odds, as for the base class.
    :param bool validate_args: as for the base class.
    :param float temperature: the package's ``tau`` (keyword only; default 1.0).
    """

    has_rsample = True

    def __init__(self, probs=None, logits=None, validate_args=None, *, temperature=1.0):
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)
        self.temperature = float(temperature)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return type(self)(logits=self.logits.expand(shape), temperature=self.temperature)

    def rsample(self, sample_shape=torch.Size()):
        from reinmax import reinmax

        shape = self._extended_shape(sample_shape)
        logits = self.logits.expand(shape).contiguous()
        sample, _ = reinmax(logits, self.temperature)
        return sample
