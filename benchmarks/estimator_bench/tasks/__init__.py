"""The benchmark's problems, written so that every estimator applies to them.

Every guide draws its discrete latents from plain ``dist.OneHotCategorical`` sites
and every model uses the one-hot values in arithmetic (matrix products), so an
estimator only has to change how the guide's sites are drawn. Each task knows its
exact objective (closed form or enumeration), which the gradient-quality
measurement differentiates and the training curves report.

Tasks (``name``):

* ``toy``: the ILS proposal's toy (``examples/toy_kl.py``): N=5 categoricals with
  K=5 categories, objective ``E[-sum(true * log(z + 1e-8))]``;
* ``moe``: the mixture-of-experts bound ``sum_z p(z|x) log p(y|z,x)``
  (``examples/mixture_of_experts.py``: same data, gate network and experts, here with a
  one-hot expert choice ``z @ W``);
* ``vae_small`` / ``vae_large``: categorical VAEs on binarized ``load_digits``
  (``examples/categorical_vae.py``: same data split and networks, one site per latent);
* ``poly``: ``E[(z - t)^2]`` over 2-category latents, t = 0.45 (closed form).

The model's prior on ``z`` in ``toy``, ``moe`` and ``poly`` is the guide's own
distribution (as in the mixture-of-experts example), so ``log p(z) - log q(z) = 0``
and the ELBO is exactly the objective.

Modules: :mod:`.base` (:class:`~.base.Task`, what the benchmark calls),
:mod:`.toys` (``toy`` and ``poly``), :mod:`.moe`, :mod:`.vae`, and :mod:`.cost`
(:class:`~.cost.CostTask`, the cost sweeps' problem; not built by :func:`make_tasks`).
"""

from __future__ import annotations

import torch

from .base import Task
from .moe import MixtureTask
from .toys import Polynomial, ProposalToy
from .vae import VAETask


def make_tasks(sizes: dict, device=torch.device("cpu")) -> dict[str, Task]:
    classes = {"toy": ProposalToy, "poly": Polynomial, "moe": MixtureTask}
    tasks = {}
    for name, size in sizes.items():
        if name.startswith("vae"):
            tasks[name] = VAETask({"name": name, **size}, device)
        else:
            tasks[name] = classes[name](size, device)
    return tasks
