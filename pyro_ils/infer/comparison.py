"""What :func:`~pyro_ils.infer.compare.compare_estimators` returns: one
:class:`EstimatorRecord` per estimator, gathered in a :class:`Comparison` with the
reference they were measured against, and the table it prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from textwrap import shorten

import torch

__all__ = ["Comparison", "EstimatorRecord"]


@dataclass(frozen=True)
class EstimatorRecord:
    """One estimator's gradient at the current parameters (see the module docstring)."""

    name: str
    cosine: float
    relative_bias: float
    bias_noise: float
    relative_variance: float
    draw_cosine: float
    seconds_per_step: float
    #: draws kept (those whose gradient is finite)
    num_draws: int
    #: objective evaluations per step (:func:`~pyro_ils.infer.evaluations_per_step`),
    #: ``None`` where it does not count this ELBO
    evaluations: int | None = None
    #: why the estimator could not run on this model (the numbers are then ``nan``)
    error: str | None = None
    #: draws left out because their gradient had a non-finite entry
    nonfinite_draws: int = 0


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_estimators` returns: the records and the reference."""

    records: tuple[EstimatorRecord, ...]
    #: ``"exact"`` (enumeration), ``"enumeration, Monte Carlo"`` (enumerated discrete
    #: sites, continuous ones drawn) or ``"RLOO, Monte Carlo"``
    reference: str
    reference_draws: int
    #: the reference's standard error, as a norm relative to its own norm
    reference_error: float
    reference_norm: float
    num_parameters: int
    #: the reference gradient, by parameter name (as Pyro's param store names them)
    reference_gradient: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: reference draws left out because their gradient had a non-finite entry
    reference_nonfinite: int = 0

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, name: str) -> EstimatorRecord:
        for record in self.records:
            if record.name == name:
                return record
        raise KeyError(name)

    def to_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.records]

    def table(self) -> str:
        """A plain-text table, one row per estimator (the columns of
        :class:`EstimatorRecord`; an estimator that cannot run says why)."""
        cols = _COLUMNS
        rows = [[c for c, _ in cols]]
        rows += [[r.name] + [f(r) for _, f in cols[1:]] for r in self.records if r.error is None]
        widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
        lines = [
            f"reference: {self.reference} ({self.reference_draws} draw(s), standard error "
            f"{self.reference_error:.2g} of its norm {self.reference_norm:.4g}); "
            f"{self.num_parameters} parameter entries"
            + (
                f"; {self.reference_nonfinite} non-finite reference draws left out"
                if self.reference_nonfinite
                else ""
            )
        ]
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells))
        lines += [f"{r.name}: n/a ({shorten(r.error, 100)})" for r in self.records if r.error]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, ax=None):
        """The bias-variance map: one point per estimator that ran, its variance per
        draw (x) against its bias (y), relative to the reference's squared norm and
        norm, on log axes, with the Monte Carlo noise floor of each bias as a grey
        mark below it. Values under :data:`PLOT_FLOOR` (exact to rounding) are drawn
        at the floor. Lower left is better. Needs ``matplotlib``.

        :param ax: a ``matplotlib`` ``Axes`` to draw on (default: a new figure's).
        :returns: the ``Axes``; the legend names the estimators.
        """
        import matplotlib.pyplot as plt  # an optional dependency

        if ax is None:
            ax = plt.subplots(figsize=(9, 5))[1]
        markers = "osD^vP*Xhp<>"
        for i, r in enumerate(r for r in self.records if r.error is None):
            x = max(r.relative_variance, PLOT_FLOOR)
            y = max(r.relative_bias, PLOT_FLOOR)
            ax.scatter([x], [y], s=30, marker=markers[i % len(markers)], label=r.name, zorder=3)
            noise = max(r.bias_noise, PLOT_FLOOR)
            ax.scatter([x], [noise], s=14, marker="_", color="grey", zorder=2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("variance of one draw / |reference|^2")
        ax.set_ylabel("|mean - reference| / |reference|")
        ax.set_title(f"estimators against the {self.reference} reference")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return ax


#: Where :meth:`Comparison.plot` draws values smaller than itself.
PLOT_FLOOR = 1e-4


#: The table's columns: heading and how a record is written.
_COLUMNS = (
    ("estimator", None),
    ("cosine", lambda r: f"{r.cosine:.3f}"),
    ("bias", lambda r: f"{r.relative_bias:.3g}"),
    ("(noise)", lambda r: f"{r.bias_noise:.2g}"),
    ("variance", lambda r: f"{r.relative_variance:.3g}"),
    ("draw cos", lambda r: f"{r.draw_cosine:.3f}"),
    ("ms/step", lambda r: f"{1e3 * r.seconds_per_step:.2f}"),
    ("evals", lambda r: "-" if r.evaluations is None else str(r.evaluations)),
    ("non-finite", lambda r: str(r.nonfinite_draws)),
)
