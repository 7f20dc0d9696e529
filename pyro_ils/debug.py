"""Find the operations that dropped the ILS gradient of an integer draw.

An :class:`~pyro_ils.ops.index_tensor.ILSIndexTensor` is differentiable only
through indexing (``x[z]``, :class:`~pyro.ops.indexing.Vindex`,
``torch.gather``, ``index_select``, ``F.embedding``, ``F.one_hot``) of a
floating-point table, and through shape operations that keep its one-hot
(``reshape``, ``.T``, ``flip``, ``select``...). Any other operation that reads
its value (a comparison, ``torch.where``, a mask, ``z.float()``, ``int(z)``,
indexing an *integer* table such as a label remap ``labels[z]``) sees a plain
integer tensor and carries no gradient. Inside :func:`report_dropped_gradients`
each such operation is recorded, with the file and line of the user code that
called it (operations inside torch and Pyro themselves, such as validation,
are not reported). Operations that use only the draw's shape, dtype or device
(``torch.zeros_like(z)``, ``ones_like``, ``empty_like``, ``full_like``,
``z.new_zeros(...)``) are not reported::

    with pyro_ils.report_dropped_gradients() as report:
        svi.step(data)
    print(report)            # operation, site and count, one per line
"""

from __future__ import annotations

import collections
import contextlib
import warnings
from contextvars import ContextVar

__all__ = [
    "GradientDropReport",
    "GradientDropWarning",
    "ILSGradientDropWarning",
    "report_dropped_gradients",
]

#: The report that draws record their dropped gradients in, while one is open.
ACTIVE_REPORT: ContextVar[GradientDropReport | None] = ContextVar(
    "pyro_ils_drop_report", default=None
)


class GradientDropWarning(UserWarning):
    """Issued by :func:`report_dropped_gradients` with ``warn=True``."""


# The name before non-ILS estimators (straight-through, ReinMax) reported drops too.
ILSGradientDropWarning = GradientDropWarning


class GradientDropReport:
    """Counts of operations that read an ILS draw's value without its gradient.

    ``report.counts`` maps ``(site, operation)`` to a count; ``site`` is the
    Pyro sample site's name where known, else ``None``.
    """

    def __init__(self, warn: bool = False):
        self.warn = warn
        self.counts: collections.Counter = collections.Counter()

    def record(self, site: str | None, operation: str) -> None:
        key = (site, operation)
        if self.warn and key not in self.counts:
            where = f"site {site!r}" if site else "an ILS draw"
            warnings.warn(
                f"{operation} on {where} carries no ILS gradient (only indexing does)",
                GradientDropWarning,
                stacklevel=4,
            )
        self.counts[key] += 1

    @property
    def operations(self) -> set[str]:
        return {op for _, op in self.counts}

    def __bool__(self) -> bool:
        return bool(self.counts)

    def __str__(self) -> str:
        if not self.counts:
            return "No operation dropped an ILS gradient."
        lines = ["Operations that read an ILS draw without carrying its gradient:"]
        for (site, op), n in self.counts.most_common():
            lines.append(f"  {op:<40} site={site or '?':<20} x{n}")
        return "\n".join(lines)

    __repr__ = __str__


@contextlib.contextmanager
def report_dropped_gradients(warn: bool = False):
    """Record, inside the block, every operation that dropped an ILS gradient.

    :param bool warn: also issue a :class:`GradientDropWarning` the first
        time each (site, operation) pair is seen.
    :returns: a :class:`GradientDropReport`, filled as the block runs.
    """
    report = GradientDropReport(warn=warn)
    token = ACTIVE_REPORT.set(report)
    try:
        yield report
    finally:
        ACTIVE_REPORT.reset(token)


def record_drop(site: str | None, operation: str) -> None:
    report = ACTIVE_REPORT.get()
    if report is not None:
        report.record(site, operation)
