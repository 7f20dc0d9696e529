r"""The run of a model or guide over the alternatives of the routed sites, in chunks.

:class:`~pyro_ils.TraceILSDiff_ELBO` (and the default's exact differences) run the
model and the guide once more per step, with every routed site's alternatives
stacked along a new dim left of every plate: ``R`` rows in all, the sum of the
sites' ``M``. The memory of that run grows with ``R``: each row is a whole run of
the model on the draw's minibatch. :func:`run_over_rows` bounds it by running at
most ``chunk_size`` rows at a time and concatenating the terms' log-probabilities
along the alternatives' dim, which gives the same values as one run over all rows
(every row is computed on its own: the model and guide broadcast over that dim).

Where the log-probabilities keep their gradient path (the Rao-Blackwellized model
terms of :class:`~pyro_ils.TraceILSDiff_ELBO`), each chunk is run under
activation checkpointing (:func:`torch.utils.checkpoint.checkpoint`, non-reentrant):
its intermediate tensors are dropped after the forward pass and recomputed, chunk
by chunk, in the backward pass, so the peak memory is that of one chunk plus the
``R`` rows of log-probabilities, at the cost of one more forward run of the
alternatives. The recomputation replays the same values, so it reproduces the
forward pass exactly for a model whose only randomness is in its sample sites.

References:
    Chen, T., Xu, B., Zhang, C. and Guestrin, C. (2016). Training deep nets with
    sublinear memory cost. arXiv:1604.06174.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.util import check_site_shape
from torch.utils.checkpoint import checkpoint

from pyro_ils.infer.coupling import coupled

__all__ = ["DEFAULT_CHUNK_SIZE", "Redraw", "check_chunk_size", "is_term", "run_over_rows"]

#: The most rows of alternatives run at once by default.
DEFAULT_CHUNK_SIZE = 64


def check_chunk_size(value) -> int | None:
    """``chunk_size``: a positive int, or ``None`` for no chunking."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {value!r}")
    return value


def is_term(site) -> bool:
    return site["type"] == "sample" and not isinstance(site["fn"], _Subsample)


class Redraw(Messenger):
    """In the guide's run over the alternatives, draw each later site (``names``) again
    where the alternatives change its distribution, coupled to its draw
    (:func:`~pyro_ils.infer.coupling.coupled`); a routed site keeps its own alternatives in
    its own rows (``own_rows``, ``(start, stop)`` among all rows). ``changed`` collects
    the sites whose value now has the alternatives' dim.

    It must sit outside the ``replay`` that gives the sites their draws."""

    def __init__(self, drawn, names: set[str], own_rows: dict, nesting: int):
        super().__init__()
        self.drawn, self.names, self.own_rows, self.nesting = drawn, names, own_rows, nesting
        self.offset = 0  #: the first row of the chunk being run
        self.changed: set[str] = set()

    def _pyro_sample(self, msg) -> None:
        name = msg["name"]
        if name not in self.names or msg["value"] is None:
            return
        value = coupled(self.drawn.nodes[name]["fn"], msg["fn"], msg["value"])
        if value is None or value.dim() - len(msg["fn"].event_shape) != self.nesting + 1:
            return  # not coupled, or not changed by any alternative
        if name in self.own_rows:
            start, stop = self.own_rows[name]
            row = torch.arange(value.size(0), device=value.device) + self.offset
            own = ((row >= start) & (row < stop)).reshape((-1,) + (1,) * (value.dim() - 1))
            value = torch.where(own, msg["value"], value)
        msg["value"] = value
        self.changed.add(name)


def _traced(
    fn: Callable, replayed: poutine.Trace, nesting: int, args, kwargs, redraw=None
) -> poutine.Trace:
    """``fn`` replayed against ``replayed``, its log-probabilities computed and their
    shapes checked. The alternatives are valid values by construction and every other
    value was validated in the draw's run: the distributions built here skip it."""
    replay = poutine.replay(fn, trace=replayed)
    if redraw is not None:
        replay = redraw(replay)
    with poutine.block(), pyro.validation_enabled(False):
        trace = poutine.trace(replay).get_trace(*args, **kwargs)
    trace.compute_log_prob()
    for term in trace.nodes.values():
        if is_term(term):
            # Every term must broadcast over the alternatives' dim, as for parallel
            # enumeration; this raises where it does not.
            check_site_shape(term, nesting)
    return trace


def _sliced(replaced: poutine.Trace, routed: list[str], start: int, stop: int):
    trace = replaced.copy()
    for name in routed:
        node = trace.nodes[name]
        trace.nodes[name] = {**node, "value": node["value"][start:stop]}
    return trace


def run_over_rows(
    fn: Callable,
    replaced: poutine.Trace,
    routed: list[str],
    rows: int,
    nesting: int,
    chunk_size: int | None,
    args: tuple,
    kwargs: dict,
    redraw: Redraw | None = None,
    checkpointed: bool = True,
) -> poutine.Trace:
    """A trace of ``fn`` replayed against ``replaced``, whose ``routed`` sites hold
    ``rows`` values stacked along the alternatives' dim (the leftmost of ``nesting +
    1`` batch dims), with every term's ``log_prob`` computed.

    With ``chunk_size`` below ``rows`` the rows are run ``chunk_size`` at a time: the
    returned trace has the first chunk's sites, each term's ``log_prob`` being the
    chunks' concatenated along the alternatives' dim (a term with no such dim is the
    same in every chunk and kept from the first). Under ``torch.is_grad_enabled()``
    each chunk runs under activation checkpointing (see the module docstring), unless
    ``checkpointed=False``.

    With ``redraw`` (the guide's run, with ``checkpointed=False`` so that the redrawn
    values keep their graph), the sites it draws again hold, in the returned trace,
    their values over all rows."""
    if chunk_size is None or rows <= chunk_size:
        return _traced(fn, replaced, nesting, args, kwargs, redraw)
    first, pieces, values = None, [], []
    for start in range(0, rows, chunk_size):
        stop = min(rows, start + chunk_size)
        part = _sliced(replaced, routed, start, stop)
        if checkpointed and torch.is_grad_enabled():
            kept: dict[str, poutine.Trace] = {}

            def run(part=part, kept=kept):
                trace = _traced(fn, part, nesting, args, kwargs)
                kept.setdefault("trace", trace)  # the forward's, not the recomputation's
                return tuple(s["log_prob"] for s in trace.nodes.values() if is_term(s))

            log_probs = checkpoint(run, use_reentrant=False)
            trace = kept["trace"]
        else:
            if redraw is not None:
                redraw.offset = start
            trace = _traced(fn, part, nesting, args, kwargs, redraw)
            log_probs = tuple(s["log_prob"] for s in trace.nodes.values() if is_term(s))
            values.append(trace)
        names = [n for n, s in trace.nodes.items() if is_term(s)]
        pieces.append((stop - start, dict(zip(names, log_probs, strict=True))))
        first = trace if first is None else first
    for name, site in first.nodes.items():
        if not is_term(site):
            continue
        parts = [(n, lp[name]) for n, lp in pieces]
        if parts[0][1].dim() <= nesting:
            continue  # no alternatives' dim: the same in every chunk
        shape = torch.broadcast_shapes(*(lp.shape[1:] for _, lp in parts))
        site["log_prob"] = torch.cat([lp.expand((n,) + shape) for n, lp in parts])
        site.pop("log_prob_sum", None)
    for name in redraw.changed if redraw is not None else ():
        first.nodes[name]["value"] = torch.cat([t.nodes[name]["value"] for t in values])
    return first
