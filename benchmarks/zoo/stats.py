"""The zoo's statistics: means, paired differences at equal budgets, t-intervals."""

from __future__ import annotations

import math

from scipy import stats


def _mean_sd(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return math.nan, math.nan, 0
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd, len(xs)


def t_interval(diffs, level=0.95):
    """Mean of paired differences and the half-width of its t-interval (``n - 1`` df)."""
    m, sd, n = _mean_sd(diffs)
    if n < 2:
        return m, math.nan, n
    return m, stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n), n


def _at(run, key, limit):
    """The metric at the last curve point with ``key <= limit``."""
    points = [p for p in run["curve"] if p[key] <= limit + 1e-12]
    return (points[-1] if points else run["curve"][0])["metric"]


def paired(runs_a, runs_b, budget):
    """Per seed, ``a - b`` at equal ``budget``: "steps", "seconds", or "evaluations"
    (steps times the run's ``evaluations_per_step``; pairs where either is not known
    are left out)."""
    by_seed = {r["seed"]: r for r in runs_b}
    diffs = []
    for a in runs_a:
        b = by_seed.get(a["seed"])
        if b is None or not a["curve"] or not b["curve"]:
            continue
        if budget == "evaluations":  # steps times each run's evaluations per step
            ea, eb = a.get("evaluations_per_step"), b.get("evaluations_per_step")
            if not (ea and eb):
                continue
            limit = min(a["steps"] * ea, b["steps"] * eb)
            diffs.append(_at(a, "step", limit / ea) - _at(b, "step", limit / eb))
            continue
        limit = min(a[budget], b[budget])
        key = "step" if budget == "steps" else budget
        diffs.append(_at(a, key, limit) - _at(b, key, limit))
    return diffs


def finite_mean(xs) -> float:
    """The mean of the finite values of ``xs``; ``-inf`` where there are none (a
    setting whose every run diverged ranks last)."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else -math.inf


def final_score(run) -> float:
    """A run's final held-out ELBO, ``-inf`` where it diverged (what tuning ranks)."""
    return run["final"].get("elbo", -math.inf) if run["stop"] != "diverged" else -math.inf
