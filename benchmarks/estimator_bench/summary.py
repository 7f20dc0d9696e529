"""The summary of a run of the estimator benchmark, and the cell formats the page
shares with it: the training table's rows per task (tuned setting, metrics, cost)
and :func:`summarize`, the numbers that the page's written reading quotes (stored in
the JSON as ``results["summary"]``)."""

from __future__ import annotations

import math

from .common import mean_sd

ILS_KEYS = ("ils_euclidean", "ils_normalize")


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


def training_table_rows(results, task):
    """Per estimator: label, family, best config, mean and sd of each final metric."""
    t = results["tasks"][task]
    rows = []
    for key, entry in results["training"][task].items():
        est = results["estimators"][key]
        runs = [r for r in entry["runs"] if not r["failed"]]
        metrics = {}
        names = sorted({k for r in runs for k in r.get("final", {})})
        for name in names:
            metrics[name] = mean_sd([r["final"].get(name) for r in runs])
        sps = mean_sd([r["seconds_per_step"] for r in runs])[0]
        rows.append(
            {
                "key": key,
                "label": est["label"],
                "family": est["family"],
                "best": entry["best"],
                "metrics": metrics,
                "failed": len(entry["runs"]) - len(runs),
                "seeds": len(entry["runs"]),
                "ms_per_step": None if sps is None else 1e3 * sps,
                "evals": entry["cost_per_step"],
            }
        )
    primary, hib = _primary(results, task)
    rows.sort(
        key=lambda r: (
            r["metrics"].get(primary, (None,))[0] is None,
            -(r["metrics"].get(primary, (0,))[0] or 0)
            if hib
            else (r["metrics"].get(primary, (0,))[0] or 0),
        )
    )
    del t
    return rows


def _primary(results, task):
    name = task.split("_")[0]
    if name == "moe":
        return "bound", True
    if name == "vae":
        return "train_elbo", True
    return "objective", False


def summarize(results) -> dict:
    """The numbers the written reading quotes, rounded as quoted."""
    s = {"tasks": {}}
    for task in results.get("training", {}):
        rows = training_table_rows(results, task)
        primary, hib = _primary(results, task)
        ok = [r for r in rows if r["metrics"].get(primary, (None,))[0] is not None]
        rank = {r["key"]: i + 1 for i, r in enumerate(ok)}
        ils = [r for r in ok if r["key"] in ILS_KEYS]
        best_ils = ils[0] if ils else None
        mirror = [r for r in ok if r["key"].startswith("ils_mirror")]
        inexact = [r for r in ok if r["key"] != "exact" and not r["key"].startswith("ils_mirror")]
        best = inexact[0] if inexact else None
        by_key = {r["key"]: r for r in ok}
        entry = {
            "primary": primary,
            "higher_is_better": hib,
            "n": len(ok),
            "seeds": rows[0]["seeds"] if rows else 0,
        }
        roles = [("best_ils", best_ils), ("best_other", best)]
        if mirror:
            roles.append(("best_ils_mirror", mirror[0]))
        for role, r in roles:
            if r is not None:
                m, sd = r["metrics"][primary]
                entry[role] = {
                    "key": r["key"],
                    "label": r["label"],
                    "hp": r["best"],
                    "mean": _r(m),
                    "sd": _r(sd),
                    "rank": rank[r["key"]],
                }
        for key in ("exact", "reinforce", "st", "reinmax", "gumbel_kl", "st_gumbel_kl"):
            if key in by_key:
                m, sd = by_key[key]["metrics"][primary]
                entry[key] = {"mean": _r(m), "sd": _r(sd), "rank": rank[key]}
        if best_ils is not None and best is not None:
            gap = best_ils["metrics"][primary][0] - best["metrics"][primary][0]
            entry["ils_minus_best"] = _r(gap if hib else -gap)
            entry["ils_gap_size"] = _r(abs(gap))
            if "reinforce" in by_key:
                g = best_ils["metrics"][primary][0] - by_key["reinforce"]["metrics"][primary][0]
                entry["ils_minus_reinforce"] = _r(g if hib else -g)
        s["tasks"][task] = entry
    if "gradients" in results:
        s["gradients"] = {}
        for task, g in results["gradients"].items():
            last = list(g["points"])[-1]
            out = {}
            for point in (list(g["points"])[0], last):
                rows = [r for r in g["points"][point]["rows"] if not r.get("failed")]
                ils = [r for r in rows if r["estimator"] in ILS_KEYS and r["cos_draw"] is not None]
                other = [
                    r
                    for r in rows
                    if r["family"] not in ("ILS", "exact") and r["cos_draw"] is not None
                ]
                if not ils or not other:
                    continue
                bi = max(ils, key=lambda r: r["cos_draw"])
                bo = max(other, key=lambda r: r["cos_draw"])
                out[point] = {
                    "ils_label": f"{bi['label']} ({_hp(bi['hp'])})",
                    "ils_cos_draw": _r(bi["cos_draw"]),
                    "ils_cos_mean": _r(bi["cos_mean"]),
                    "other_label": bo["label"],
                    "other_cos_draw": _r(bo["cos_draw"]),
                    "other_cos_mean": _r(bo["cos_mean"]),
                }
            s["gradients"][task] = out
    if "gradients" in results:
        # Trust check: unbiased estimators' bias against the Monte Carlo floor, and ILS's.
        unbiased, ils_ratio = [], {}
        for task, g in results["gradients"].items():
            for point, p in g["points"].items():
                for r in p["rows"]:
                    if r.get("failed") or not r.get("mc_floor"):
                        continue
                    ratio = r["rel_bias"] / r["mc_floor"]
                    if r["family"] in ("score function", "control variate"):
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
                and r["family"] in ("score function", "control variate")
                and r["cos_mean"] is not None
                and r["cos_mean"] < -0.5
                and r["rel_bias"] > 3 * (r["mc_floor"] or 0)
            )
        s["wrong_sign_last_point"] = wrong
        s["wrong_sign_threshold"] = -0.5
        s["significance_factor"] = 3
    if "training" in results:
        eq = {}
        for task, per in results["training"].items():
            if "rloo4" not in per:
                continue
            primary, _ = _primary(results, task)
            steps = results["settings"]["training"]["steps"][task]
            runs = [r for r in per["rloo4"]["runs"] if not r["failed"]]
            vals = []
            for r in runs:
                pts = [c for c in r["curve"] if c["evals"] <= steps and c.get(primary) is not None]
                if pts:
                    vals.append(pts[-1][primary])
            if vals:
                eq[task] = {
                    "evals": max(c["evals"] for c in runs[0]["curve"] if c["evals"] <= steps),
                    "rloo4": _r(mean_sd(vals)[0]),
                }
        s["rloo4_at_equal_evals"] = eq
        top = max(results["lr_grid"])
        chosen = [e["best"]["lr"] for per in results["training"].values() for e in per.values()]
        s["lr_at_grid_max"] = {
            "count": sum(lr == top for lr in chosen),
            "of": len(chosen),
            "lr": top,
        }
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
    if "proposal" in results:
        rows = {}
        for row in results["proposal"]:
            last = [r["curve"][-1] for r in row["runs"] if not r["failed"]]
            rows[f"{row['estimator']} {_hp(row['hp'], lr=False)}"] = {
                "kl": _r(mean_sd([c["kl_true_pi"] for c in last])[0]),
                "objective": _r(mean_sd([c["objective"] for c in last])[0]),
            }
        s["proposal"] = rows
    return s
