r"""Every estimator's gradient on a user's own model, against a reference.

:func:`compare_estimators` answers, at the current parameters of a model and guide,
"how good is each estimator's gradient here?" without training anything. For each
estimator :math:`e` it draws ``num_draws`` gradients :math:`g_1, \dots, g_M` of the loss
with respect to every parameter the model and guide read from Pyro's param store
(``pyro.module`` networks included, other entries of the store left out), and compares
them with a reference gradient :math:`r`:

.. math::

    \bar g = \frac1M \sum_m g_m, \qquad
    \mathrm{cosine} = \frac{\langle \bar g, r\rangle}{\|\bar g\|\,\|r\|}, \qquad
    \mathrm{bias} = \frac{\|\bar g - r\|}{\|r\|}, \qquad
    \mathrm{variance} = \frac{\frac1{M-1}\sum_m \|g_m - \bar g\|^2}{\|r\|^2}.

``bias`` contains Monte Carlo noise: for an unbiased estimator its expected square is
:math:`(\mathrm{tr}\,\Sigma_e / M + \mathrm{tr}\,\Sigma_r / R) / \|r\|^2`, reported as
``bias_noise``; a ``bias`` well above ``bias_noise`` is bias. ``variance`` is per single
draw (one optimisation step's gradient). ``draw_cosine`` is the mean cosine of a single
draw to :math:`r`, what one step sees.

**The reference.** Where Pyro's :class:`~pyro.infer.TraceEnum_ELBO` can enumerate the
guide's discrete sites in parallel, :math:`r` is its gradient: exact in the discrete
sites (one evaluation when every latent site is discrete, the mean of
``reference_draws`` evaluations otherwise). Where it cannot, :math:`r` is the mean of
:class:`~pyro_ils.infer.trace_rloo_elbo.TraceRLOO_ELBO` gradients over
``reference_draws`` draws (``reference_draws / 10`` steps of 10 samples), unbiased, with
its standard error stated.

Plate subsamples are drawn once and held, so that all estimators see the same
minibatch, and every estimator starts from the same random state. The draws are taken
round-robin, one of each estimator in turn, so that a change in the machine's load
hits all of them alike (``seconds_per_step``). Nothing is trained: every parameter's
value, its ``.grad`` and the param store's names are restored after each draw. State an
estimator adds to the store (:class:`~pyro.infer.TraceGraph_ELBO`'s baselines, a
control variate) is kept for that estimator's own later draws only.

References:
    Kool, van Hoof, Welling (2019), "Buy 4 REINFORCE samples, get a baseline for free!",
    ICLR workshop (the unbiased reference).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.infer.elbo import ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import get_rng_state, set_rng_state
from tqdm.auto import tqdm

from pyro_ils.infer.comparison import Comparison, EstimatorRecord
from pyro_ils.infer.estimator_catalog import (
    RLOO_SAMPLES,
    default_estimators,
    matched_rloo,
    reference_elbos,
)
from pyro_ils.infer.evaluations import evaluations_per_step

__all__ = ["EstimatorRecord", "Comparison", "compare_estimators"]


class _HeldSubsample(Messenger):
    """Gives each plate subsample site the indices recorded for it (if any)."""

    def __init__(self, indices: dict[str, torch.Tensor]):
        super().__init__()
        self.indices = indices

    def _pyro_sample(self, msg):
        if site_is_subsample(msg) and msg["name"] in self.indices:
            msg["value"] = self.indices[msg["name"]]


class _ParamState:
    """The param store's names, values and gradients, to be put back as they were.

    The tensors themselves are kept (an optimiser may hold them); their data and
    ``.grad`` are copied back, and names an estimator added are removed (and, with
    ``extra``, the names one estimator added on its earlier draws put back).
    """

    def __init__(self):
        store = pyro.get_param_store()
        self.params = dict(store._params)
        self.constraints = dict(store._constraints)
        self.data = {k: v.detach().clone() for k, v in self.params.items()}
        self.grads = {k: None if v.grad is None else v.grad.clone() for k, v in self.params.items()}

    def restore(self, extra: dict | None = None) -> None:
        store = pyro.get_param_store()
        store.clear()
        store.set_state({"params": self.params, "constraints": self.constraints})
        if extra:
            store.set_state(extra)
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.data[name])
                p.grad = self.grads[name]

    def added(self) -> dict:
        """What the store holds beyond the snapshot, in ``set_state``'s form."""
        store = pyro.get_param_store()
        new = [k for k in store._params if k not in self.params]
        return {
            "params": {k: store._params[k] for k in new},
            "constraints": {k: store._constraints[k] for k in new},
        }


def _draw(elbo: ELBO, model, guide, args, kwargs, names) -> tuple[torch.Tensor, float]:
    """One flattened gradient of ``elbo`` in the parameters ``names``, and the seconds
    of its ``loss_and_grads``."""
    store = pyro.get_param_store()
    for p in store._params.values():
        p.grad = None
    start = time.perf_counter()
    elbo.loss_and_grads(model, guide, *args, **kwargs)
    seconds = time.perf_counter() - start
    parts = []
    for name in names:
        p = store._params[name]
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        parts.append(grad.detach().reshape(-1).double())
    return torch.cat(parts), seconds


def _interleaved(elbos: dict, model, guide, args, kwargs, names, num, state, bar) -> dict:
    """``num`` gradients of every ELBO, drawn round-robin (one draw of each in turn,
    so that a change of the machine's load hits all alike), after one round of warm-up
    draws that are neither kept nor timed. Each ELBO keeps its own
    random stream and the state it adds to the param store (a baseline, a control
    variate) across its draws; nothing else carries over. A draw whose gradient has a
    non-finite entry is counted, not kept. Returns, per name, the stacked finite
    gradients, the mean seconds and the count of non-finite draws, or the error that
    stopped it (fewer than two finite draws, or none of one, is one)."""
    rng = {name: get_rng_state() for name in elbos}
    extra = {name: None for name in elbos}
    draws = {name: [] for name in elbos}
    seconds = dict.fromkeys(elbos, 0.0)
    nonfinite = dict.fromkeys(elbos, 0)
    errors = {}
    for round_ in range(num + 1):  # round 0 warms up (caches, lazy set-up): not kept
        for name, elbo in elbos.items():
            if name in errors:
                continue
            state.restore(extra[name])
            set_rng_state(rng[name])
            try:
                g, t = _draw(elbo, model, guide, args, kwargs, names)
            except Exception as e:  # not applicable to this model: say why
                errors[name] = f"{type(e).__name__}: {e}"
                bar.update(num - len(draws[name]) - nonfinite[name])
                continue
            finally:
                rng[name], extra[name] = get_rng_state(), state.added()
            if round_ > 0:
                if bool(torch.isfinite(g).all()):
                    draws[name].append(g)
                else:
                    nonfinite[name] += 1
                seconds[name] += t
                bar.update(1)
    state.restore()
    for name in elbos:
        if name not in errors and len(draws[name]) < min(2, num):
            errors[name] = f"{nonfinite[name]} of {num} draws had a non-finite gradient"
    return {
        name: errors.get(name) or (torch.stack(draws[name]), seconds[name] / num, nonfinite[name])
        for name in elbos
    }


def _evaluations(elbo, model, guide, args, kwargs) -> int | None:
    try:
        return evaluations_per_step(elbo, model, guide, *args, **kwargs)
    except TypeError:  # an ELBO it does not count
        return None


def _by_name(flat: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    store, out, start = pyro.get_param_store(), {}, 0
    for name in names:
        p = store._params[name]
        out[name] = flat[start : start + p.numel()].reshape(p.shape).to(p.dtype)
        start += p.numel()
    return out


def _spread(g: torch.Tensor) -> float:
    """The draws' summed variance, ``sum_m |g_m - mean|^2 / (M - 1)`` (0 for one draw)."""
    return float(((g - g.mean(0)) ** 2).sum() / max(len(g) - 1, 1))


def _stats(g: torch.Tensor, ref: torch.Tensor, ref_var: float) -> dict[str, float]:
    mean = g.mean(0)
    norm2 = float(ref.dot(ref))
    var = _spread(g)
    cos = float(mean.dot(ref) / (mean.norm() * ref.norm()).clamp_min(1e-300))
    draw = torch.nn.functional.cosine_similarity(g, ref.expand_as(g), dim=-1, eps=1e-300)
    return {
        "cosine": cos,
        "relative_bias": float((mean - ref).norm()) / math.sqrt(norm2),
        "bias_noise": math.sqrt((var / len(g) + ref_var) / norm2),
        "relative_variance": var / norm2,
        "draw_cosine": float(draw.mean()),
    }


def _is_discrete(fn) -> bool:
    try:
        return bool(fn.support.is_discrete)
    except (AttributeError, NotImplementedError):
        return False


def _reference(model, guide, guide_trace, args, kwargs, draws, max_plate_nesting):
    """How the reference is computed: ``(label, elbo, guide, steps, evaluations)``.

    Exact enumeration (Pyro's ``TraceEnum_ELBO`` on the guide enumerated in parallel)
    where every discrete latent site can be enumerated and the model broadcasts over
    it; RLOO otherwise (a ``.to_event`` site, a model that indexes with ``int(z)``).
    """
    exact_elbo, rloo_elbo = reference_elbos(max_plate_nesting)
    latents = [
        site
        for site in guide_trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]
    discrete = [site for site in latents if _is_discrete(site["fn"])]
    if discrete and all(getattr(s["fn"], "has_enumerate_support", False) for s in discrete):
        enum_guide = config_enumerate(guide, "parallel")
        try:
            with torch.no_grad():
                exact_elbo.loss(model, enum_guide, *args, **kwargs)
        except Exception:  # the model does not broadcast over enumerated values
            pass
        else:
            if len(discrete) == len(latents):
                return "exact", exact_elbo, enum_guide, 1, 1
            return "enumeration, Monte Carlo", exact_elbo, enum_guide, draws, draws
    steps = max(2, draws // RLOO_SAMPLES)
    return "RLOO, Monte Carlo", rloo_elbo, guide, steps, steps * RLOO_SAMPLES


def compare_estimators(
    model: Callable,
    guide: Callable,
    *args,
    estimators: Mapping[str, ELBO] | Sequence[ELBO] | None = None,
    num_draws: int = 100,
    reference_draws: int = 1000,
    max_plate_nesting: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    verbose: bool = True,
    **kwargs,
) -> Comparison:
    r"""Measure every estimator's gradient at the current parameters of ``model`` and
    ``guide`` against a reference (exact enumeration where possible).

    The first thing to run when choosing an estimator for a model: it needs the model,
    the guide and their arguments, trains nothing and restores every parameter.

    :param model: the Pyro model.
    :param guide: the Pyro guide, as it is trained (plain ``dist.Categorical``,
        ``Bernoulli``, ``OneHotCategorical`` sites, or the plugin's distributions).
    :param args: passed to ``model`` and ``guide``.
    :param estimators: ELBO objects to measure, by name (a mapping) or named by their
        ``repr``; default :func:`~pyro_ils.infer.estimator_catalog.default_estimators`,
        every estimator the package has and Pyro's own.
    :param num_draws: gradients drawn per estimator (:math:`M \ge 2`).
    :param reference_draws: objective evaluations of a Monte Carlo reference (unused
        when the reference is exact).
    :param max_plate_nesting: passed to the ELBOs that need it (guessed by Pyro if
        ``None``).
    :param seed: if given, ``pyro.set_rng_seed(seed)`` first, so that the minibatch
        and every draw are reproducible. Every estimator starts from the same random
        state either way.
    :param progress: show a progress bar.
    :param verbose: print the table.
    :param kwargs: passed to ``model`` and ``guide``.
    :returns: a :class:`Comparison` (iterate for the :class:`EstimatorRecord`
        s, ``str()`` for the table).
    """
    if num_draws < 2:
        raise ValueError(f"num_draws must be at least 2, got {num_draws}")
    if reference_draws < 2:
        raise ValueError(f"reference_draws must be at least 2, got {reference_draws}")
    defaults = estimators is None
    if defaults:
        estimators = default_estimators(max_plate_nesting)
    elif not isinstance(estimators, Mapping):
        estimators = {repr(e): e for e in estimators}
    for name, elbo in estimators.items():
        if not isinstance(elbo, ELBO):
            raise TypeError(f"estimator {name!r} is not a Pyro ELBO: {elbo!r}")

    if seed is not None:
        pyro.set_rng_seed(seed)
    # Initialise the parameters (as a first SVI step would) and hold one minibatch.
    with poutine.trace(param_only=True) as used:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    held = {
        name: site["value"]
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and site_is_subsample(site)
    }
    model, guide = _HeldSubsample(held)(model), _HeldSubsample(held)(guide)
    store = pyro.get_param_store()
    names = sorted(  # the parameters the model and guide use, not the whole store
        name
        for name in used.trace.nodes
        if name in store._params and store._params[name].requires_grad
    )
    if not names:
        raise ValueError(
            "the model and guide read no parameter from Pyro's param store: nothing to "
            "measure (PyroModule parameters under module_local_params=True are not supported)"
        )
    state = _ParamState()
    if defaults:  # RLOO at as many evaluations as the exact differences make
        matched = matched_rloo(model, guide, *args, max_plate_nesting=max_plate_nesting, **kwargs)
        state.restore()
        if matched is not None:
            estimators[matched[0]] = matched[1]

    bar = tqdm(
        total=num_draws * len(estimators),
        desc="compare_estimators",
        disable=not progress,
        leave=False,
    )
    try:
        reference, ref_elbo, ref_guide, ref_num, ref_evals = _reference(
            model, guide, guide_trace, args, kwargs, reference_draws, max_plate_nesting
        )
        bar.total += ref_num
        state.restore()
        if seed is not None:
            pyro.set_rng_seed(seed)
        ref_g = _interleaved(
            {"reference": ref_elbo}, model, ref_guide, args, kwargs, names, ref_num, state, bar
        )["reference"]
        if isinstance(ref_g, str):
            raise RuntimeError(f"the reference ({reference}) failed: {ref_g}")
        ref_g, _, ref_nonfinite = ref_g
        ref = ref_g.mean(0)
        ref_var = _spread(ref_g) / len(ref_g)
        if float(ref.norm()) == 0.0:
            raise ValueError("the reference gradient is zero: nothing to compare with")
        if seed is not None:
            pyro.set_rng_seed(seed)
        drawn = _interleaved(estimators, model, guide, args, kwargs, names, num_draws, state, bar)
        records = []
        for name, elbo in estimators.items():
            if isinstance(drawn[name], str):
                nan = math.nan
                records.append(
                    EstimatorRecord(name, nan, nan, nan, nan, nan, nan, 0, error=drawn[name])
                )
                continue
            g, seconds, bad = drawn[name]
            stats = _stats(g, ref, ref_var)
            stats["evaluations"] = _evaluations(elbo, model, guide, args, kwargs)
            state.restore()
            records.append(
                EstimatorRecord(
                    name, **stats, seconds_per_step=seconds, num_draws=len(g), nonfinite_draws=bad
                )
            )
    finally:
        bar.close()
        state.restore()
    result = Comparison(
        records=tuple(records),
        reference=reference,
        reference_draws=ref_evals,
        reference_nonfinite=ref_nonfinite,
        reference_error=math.sqrt(ref_var) / float(ref.norm()),
        reference_norm=float(ref.norm()),
        num_parameters=int(ref.numel()),
        reference_gradient=_by_name(ref, names),
    )
    if verbose:
        print(result.table())
    return result
