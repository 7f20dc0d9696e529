"""The zoo's goals, declared before the runs: each one named estimator against one
named peer on one metric, with its verdict from the paired t-interval (or, against
exact enumeration, the relative gap of the final ELBO)."""

from __future__ import annotations

from pyro_ils.infer.site_choice import DIFFERENCES

from .stats import _mean_sd, paired, t_interval

DEFAULT = "ils_default"


def _runs(result, name, setting="tuned"):
    return [r for r in result["runs"] if r["estimator"] == name and r["setting"] == setting]


def _digits(result) -> int:
    """Decimals for the metric: 3 where it is per data point and near 0 (the mixture of
    experts' bound), else 1."""
    values = sorted(abs(r["final"]["elbo"]) for r in result["runs"] if "elbo" in r["final"])
    return 3 if values and values[len(values) // 2] < 10 else 1


#: The models on which the default must also be at least as good as ReinMax (tuned)
#: at equal wall time: the categorical VAEs, as the zoo issue states the target.
REINMAX_GOAL = ("cat_vae_20x10", "cat_vae_4x8", "cat_vae_24x4")


#: The peers the exact-difference member meets at equal objective evaluations (where the
#: default gave every site exact differences, :func:`exact_everywhere`):
#: IndeCateR, the estimator of its own family, and RLOO with as many samples as it
#: evaluates.
EQUAL_EVALUATIONS_PEERS = ("indecater", "rloo_matched")


def exact_everywhere(run) -> bool:
    """Whether the default's per-site choice gave every site of ``run`` exact
    differences (its gradients are then those of ``TraceILSDiff_ELBO()``)."""
    choices = run.get("site_choices") or {}
    return bool(choices) and all(c.startswith(DIFFERENCES) for c in choices.values())


def goals(result) -> list[dict]:
    """The issue's targets for the default, each with its verdict and distance."""
    names = set(result["estimators"])
    out = []
    default = _runs(result, DEFAULT)
    for peer in ("trace", "tracegraph"):
        if peer not in names:
            continue
        for budget in ("steps", "seconds"):
            m, hw, n = t_interval(paired(default, _runs(result, peer), budget))
            out.append(
                {
                    "goal": f"default >= {result['estimators'][peer]['label']} at equal "
                    f"{'steps' if budget == 'steps' else 'wall time'}",
                    "difference": m,
                    "half_width": hw,
                    "n": n,
                    "met": m >= 0,
                }
            )
    if result["model"] in REINMAX_GOAL and "reinmax" in names:
        m, hw, n = t_interval(paired(default, _runs(result, "reinmax"), "seconds"))
        out.append(
            {
                "goal": f"default >= {result['estimators']['reinmax']['label']} (tuned) at "
                "equal wall time",
                "difference": m,
                "half_width": hw,
                "n": n,
                "met": m >= 0,
            }
        )
    for peer in EQUAL_EVALUATIONS_PEERS:
        counted = [r for r in default if r.get("evaluations_per_step")]
        if peer not in names or not counted or not all(map(exact_everywhere, default)):
            continue
        m, hw, n = t_interval(paired(default, _runs(result, peer), "evaluations"))
        out.append(
            {
                "goal": f"default (exact differences) >= {result['estimators'][peer]['label']}"
                " at equal objective evaluations",
                "difference": m,
                "half_width": hw,
                "n": n,
                "met": m >= 0,
            }
        )
    if "enum" in names:
        d, _, _ = _mean_sd([r["final"].get("elbo") for r in default])
        e, _, _ = _mean_sd([r["final"].get("elbo") for r in _runs(result, "enum")])
        gap = (e - d) / abs(e)
        out.append(
            {
                "goal": "default within 1% of exact-gradient training (final ELBO)",
                "difference": d - e,
                "relative_gap": gap,
                "met": gap <= 0.01,
            }
        )
    return out


def goal_lines(result) -> str:
    """The goals as Markdown bullets, each with its verdict and distance."""
    lines = []
    diverged = sum(r["stop"] == "diverged" for r in _runs(result, DEFAULT))
    if diverged:
        lines.append(
            f"* {diverged} of the default's {len(_runs(result, DEFAULT))} runs diverged "
            "(non-finite loss); the final means below leave them out, the paired "
            "differences read them up to their last finite point."
        )
    d = _digits(result)
    for g in goals(result):
        verdict = "**met**" if g["met"] else "**not met**"
        if "relative_gap" in g:
            detail = (
                f"default − exact = {g['difference']:.{d}f} nats ({100 * g['relative_gap']:.2f}%)"
            )
        else:
            low, high = g["difference"] - g["half_width"], g["difference"] + g["half_width"]
            clear = "excludes" if low > 0 or high < 0 else "includes"
            detail = (
                f"paired difference {g['difference']:.{d}f} ± {g['half_width']:.{d}f} "
                f"(95% t-interval, {g['n'] - 1} df; it {clear} 0)"
            )
        lines.append(f"* {g['goal']}: {verdict}; {detail}.")
    return "\n".join(lines)
