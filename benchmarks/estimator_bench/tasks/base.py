"""The interface of the benchmark's tasks: what the benchmark calls on each."""

from __future__ import annotations

import torch


class Task:
    name = ""
    title = ""
    enumerable = True
    max_plate_nesting = 1
    higher_is_better = False
    primary = "objective"
    primary_label = ""
    baseline_dim = 1
    #: ``svi.step`` returns the loss of the whole data set; divided by this: per unit.
    loss_scale = 1.0

    def __init__(self, size: dict, device=torch.device("cpu")):
        self.size = dict(size)
        self.device = device

    # what the benchmark calls
    def reset(self, seed: int) -> None:
        """Fresh parameters for ``seed`` (the param store is cleared by the caller)."""

    def train_args(self, gen: torch.Generator) -> tuple:
        return ()

    def grad_args(self) -> tuple:
        return ()

    def baseline_input(self, *args):
        raise NotImplementedError

    def exact_loss(self, *args) -> torch.Tensor:
        """The exact loss (negative ELBO) that ``svi.step(*args)`` estimates."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        raise NotImplementedError

    def final(self) -> dict:
        return self.evaluate()

    def is_guide_param(self, name: str) -> bool:
        raise NotImplementedError

    @property
    def num_configs(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, "title": self.title, **self.size}
