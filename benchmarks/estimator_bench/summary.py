"""The summary of a run of the estimator benchmark, and the cell formats the page
shares with it: :func:`summarize`, the numbers that the page's written reading quotes
(stored in the JSON as ``results["summary"]``). It ranks no family against another:
it records the unbiased estimators' bias against the Monte Carlo floor, ILS's, the
rows whose mean gradient points the wrong way, and one cost ratio."""

from __future__ import annotations

import math

ILS_KEYS = ("ils_euclidean", "ils_normalize")
#: The families whose estimators are unbiased (REINFORCE, baselines, RLOO, IndeCateR,
#: MuProp, REBAR, RELAX).
UNBIASED_FAMILIES = ("score function", "control variate")


def _r(x, d=2):
    """Rounded as quoted: ``d`` decimals, or 3 significant digits below 1 in size."""
    if x is None:
        return None
    x = float(x)
    if abs(x) < 1 and x != 0:
        return float(f"{x:.3g}")
    return round(x, d)


def _fmt(x, d=2):
    if x is None:
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** (-d)):
        return f"{x:.1e}"
    return f"{x:.{d}f}"


def _evals_cell(evals) -> str:
    """Evaluations per step: a number, or one per task (``{task: n}``)."""
    if isinstance(evals, dict):
        return ", ".join(f"{task} {n}" for task, n in evals.items())
    return str(evals)


def _cell(text):
    """Text for a markdown table cell (a bare ``|`` would start a new column)."""
    return text.replace("|", "\\|")


def _hp(hp, lr=True):
    parts = [f"{'lr' if k == 'lr' else k} {v:g}" for k, v in hp.items() if lr or k != "lr"]
    return ", ".join(parts) if parts else "-"


# -- summaries -----------------------------------------------------------------------


def summarize(results) -> dict:
    """The numbers the written reading quotes, rounded as quoted."""
    s = {}
    if "gradients" in results:
        # Trust check: unbiased estimators' bias against the Monte Carlo floor, and ILS's.
        unbiased, ils_ratio = [], {}
        for task, g in results["gradients"].items():
            for point, p in g["points"].items():
                for r in p["rows"]:
                    if r.get("failed") or not r.get("mc_floor"):
                        continue
                    ratio = r["rel_bias"] / r["mc_floor"]
                    if r["family"] in UNBIASED_FAMILIES:
                        unbiased.append(ratio)
                    if r["estimator"] in ILS_KEYS and point == list(g["points"])[-1]:
                        ils_ratio[task] = min(ils_ratio.get(task, math.inf), ratio)
        if unbiased:
            s["unbiased_max_bias_over_floor"] = _r(max(unbiased), 1)
            s["unbiased_rows"] = len(unbiased)
        s["ils_min_bias_over_floor_last_point"] = {k: _r(v, 1) for k, v in ils_ratio.items()}
        wrong = {}
        for task, g in results["gradients"].items():
            last = g["points"][list(g["points"])[-1]]
            wrong[task] = [
                f"{r['label']}" + (f" ({_hp(r['hp'])})" if r["hp"] else "")
                for r in last["rows"]
                if not r.get("failed")
                and r["cos_mean"] is not None
                and r["cos_mean"] < -0.5
                and r["rel_bias"] > 3 * (r["mc_floor"] or 0)
            ]
            wrong[task + "_unbiased"] = sum(
                1
                for r in last["rows"]
                if not r.get("failed")
                and r["family"] in UNBIASED_FAMILIES
                and r["cos_mean"] is not None
                and r["cos_mean"] < -0.5
                and r["rel_bias"] > 3 * (r["mc_floor"] or 0)
            )
        s["wrong_sign_last_point"] = wrong
        s["wrong_sign_threshold"] = -0.5
        s["significance_factor"] = 3
    if "cost" in results:
        rows = [r for r in results["cost"]["rows"] if not r.get("failed")]
        if rows:
            kmax = max(r["categories"] for r in rows if r["sweep"] == "K")
            at = {r["estimator"]: r for r in rows if r["sweep"] == "K" and r["categories"] == kmax}
            ref = at.get("st") or at.get("reinforce")
            if "ils_euclidean" in at and ref is not None:
                s["cost"] = {
                    "K": kmax,
                    "ils_ms": _r(at["ils_euclidean"]["median_ms"], 1),
                    "ref": ref["estimator"],
                    "ref_ms": _r(ref["median_ms"], 1),
                    "ratio": _r(at["ils_euclidean"]["median_ms"] / ref["median_ms"], 1),
                }
    return s
