"""The written reading of the results page, generated from ``results["summary"]``.

Every number in this text is a value of the summary (stored in the JSON); the
explanations (why) state the mechanism of ``docs/method.md``, without numbers.
"""

from __future__ import annotations


def _hp(hp):
    return ", ".join(f"{k} {v:g}" for k, v in hp.items())


def _v(x):
    return "n/a" if x is None else f"{x:g}"


def text(results, s) -> str:
    out = ["## Reading\n\n"]
    tasks = s.get("tasks", {})
    if tasks:
        seeds = next(iter(tasks.values()))["seeds"]
        out.append(
            "**Training, at each estimator's tuned setting.** Final primary metric, mean "
            f"over {seeds} seeds (the tables below give the spread), of the best ILS "
            "setting (euclidean or normalize projection, tuned step size) against the best "
            "of every other estimator except exact enumeration:\n\n"
        )
        ahead, behind = [], []
        for task, e in tasks.items():
            if "best_ils" not in e or "best_other" not in e:
                continue
            bi, bo = e["best_ils"], e["best_other"]
            direction = "higher" if e["higher_is_better"] else "lower"
            gap = e["ils_minus_best"]
            line = (
                f"* `{task}` ({e['primary']}, {direction} is better): {bi['label']} "
                f"({_hp(bi['hp'])}) {_v(bi['mean'])}, rank {bi['rank']} of {e['n']}; "
            )
            if bi["key"] == bo["key"]:
                line += "the best inexact estimator"
                ahead.append(task)
            else:
                line += f"best {bo['label']} ({_hp(bo['hp'])}) {_v(bo['mean'])}"
                if gap is not None and gap < 0:
                    behind.append(task)
                    line += f", ILS behind by {_v(e['ils_gap_size'])}"
                elif gap is not None:
                    ahead.append(task)
                    line += f", ILS ahead by {_v(gap)}"
            if "best_ils_mirror" in e:
                bm = e["best_ils_mirror"]
                line += (
                    f"; the mean-start variant {bm['label']} ({_hp(bm['hp'])}) "
                    f"{_v(bm['mean'])}, rank {bm['rank']}"
                )
            extras = []
            for key, name in (
                ("exact", "exact gradient"),
                ("reinforce", "REINFORCE"),
                ("st", "straight-through"),
                ("reinmax", "ReinMax"),
                ("gumbel_kl", "Gumbel-Softmax (analytic KL)"),
            ):
                if key in e:
                    extras.append(f"{name} {_v(e[key]['mean'])}")
            if extras:
                line += "; " + ", ".join(extras)
            out.append(line + ".\n")
        out.append(
            "\nILS ends ahead of every inexact estimator on "
            + (", ".join(f"`{t}`" for t in ahead) if ahead else "no task")
            + " and behind the best of them on "
            + (", ".join(f"`{t}`" for t in behind) if behind else "no task")
            + ". Differences smaller than the spread over seeds in the tables are not "
            "differences."
            + (
                f" The runs are short (a few hundred steps) and {s['lr_at_grid_max']['count']} "
                f"of the {s['lr_at_grid_max']['of']} tuned configurations took the grid's "
                f"largest learning rate, {_v(s['lr_at_grid_max']['lr'])}: the ranking is one "
                "of early training, and some estimators may do better with a larger one."
                if s.get("lr_at_grid_max", {}).get("count")
                else ""
            )
            + "\n\n"
        )
    eq = s.get("rloo4_at_equal_evals", {})
    if eq and tasks:
        parts = []
        for task, e in eq.items():
            t = tasks.get(task, {})
            bi = t.get("best_ils")
            if bi is None:
                continue
            parts.append(
                f"`{task}` {_v(e['rloo4'])} after {e['evals']} evaluations (ILS's best "
                f"{_v(bi['mean'])} after the same number)"
            )
        if parts:
            out.append(
                "RLOO (S=4) pays 4 evaluations per step; cut at the evaluations that "
                "one-evaluation estimators used in all, it stands at " + "; ".join(parts) + ".\n\n"
            )
    grads = s.get("gradients", {})
    if grads:
        out.append(
            "**Gradients.** Mean cosine of one draw with the exact gradient (1: exact "
            "direction every time), best ILS setting against the best score-function, "
            "control-variate, relaxed or straight-through estimator, at the start and at "
            "the end of the exact-gradient trajectory:\n\n"
        )
        for task, pts in grads.items():
            parts = []
            for point, p in pts.items():
                parts.append(
                    f"step {point}: {p['ils_label']} {_v(p['ils_cos_draw'])} against "
                    f"{p['other_label']} {_v(p['other_cos_draw'])}"
                )
            if parts:
                out.append(f"* `{task}`: " + "; ".join(parts) + ".\n")
        out.append("\n")
        if "unbiased_max_bias_over_floor" in s:
            ratios = s.get("ils_min_bias_over_floor_last_point", {})
            out.append(
                "The referee checks itself: over all "
                f"{s['unbiased_rows']} measurements of the unbiased estimators (REINFORCE, "
                "baselines, RLOO, MuProp, REBAR, RELAX), the distance of the mean from the "
                "exact gradient was at most "
                f"{_v(s['unbiased_max_bias_over_floor'])} times its Monte Carlo floor, as "
                "unbiasedness predicts. For ILS at the end of the trajectory the smallest "
                "ratio over its step sizes and projections was "
                + ", ".join(f"{_v(v)} (`{k}`)" for k, v in ratios.items())
                + ": a ratio well above a few is bias that more draws do not remove.\n\n"
            )
    cost = s.get("cost")
    if cost:
        out.append(
            f"**Cost.** At K = {cost['K']} (4 sites), a `TraceILS_ELBO` step took "
            f"{_v(cost['ils_ms'])} ms against {_v(cost['ref_ms'])} ms for `{cost['ref']}` "
            f"({_v(cost['ratio'])}x), all estimators timed in one process; the cost section "
            "has the whole sweep. Exact enumeration's time and memory grow with K^sites.\n\n"
        )
    prop = s.get("proposal")
    if prop:

        def pick(prefix):
            rows = {
                k: v for k, v in prop.items() if k.startswith(prefix) and v["objective"] is not None
            }
            return min(rows.items(), key=lambda kv: kv[1]["objective"]) if rows else None

        ils = pick("ils_normalize")
        gs = pick("gumbel_kl")
        if ils and gs:
            out.append(
                "**The proposal's toy.** With its own settings, the best `normalize` ILS "
                f"run ({ils[0].split(' ', 1)[1]}) ended at KL(true ‖ pi) {_v(ils[1]['kl'])} and "
                f"E[f] {_v(ils[1]['objective'])}; the best Gumbel-Softmax run "
                f"({gs[0].split(' ', 1)[1]}) at KL {_v(gs[1]['kl'])} and E[f] "
                f"{_v(gs[1]['objective'])}. E[f] is the objective; a small KL is not "
                "success there (its minimizer is the mode's point mass).\n\n"
            )
    large = tasks.get("vae_large", {}).get("best_ils")
    wrong = s.get("wrong_sign_last_point", {}).get("poly")
    out.append(
        "**Why.** ILS sends the logits `pi - pi_D = (pi - z) + (z - pi_D)`: a zero-mean "
        "term that does not depend on the loss, plus the loss signal `z - pi_D`, of the "
        "order of the step size times `dL/dz` at the sampled vertex. Its expectation is "
        "the gradient of a KL towards a target built from one first-order step at that "
        "vertex, not the gradient of the expected loss: it is biased (the ratios above), "
        "and the bias does not shrink with more draws, while REINFORCE, RLOO and the "
        "control variates are unbiased and lose only to variance. How much the bias costs "
        "depends on how well `dL/dz` at the drawn vertex predicts the loss at the other "
        "vertices: poorly for the proposal's toy (off the drawn category `dL/dz` is huge, "
        "so the target hardly depends on the step size) and for the mixture-of-experts "
        "bound (another expert's loss is not a first-order step away), better for the "
        "VAEs, whose decoders are smooth in the one-hot input. With many latent sites the "
        "score-function estimators' noise grows (one loss multiplies every site's score) "
        "while ILS, like the straight-through family, uses a per-site signal"
        + (f"; `vae_large` is that setting, and there ILS ranked {large['rank']}" if large else "")
        + ". Straight-through and ReinMax are exact for a linear objective and ILS is not"
        + (
            "; on the polynomial, at the end of the trajectory (the probability already "
            "below t), the mean gradient pointed away from the exact one (cosine below "
            f"{_v(s['wrong_sign_threshold'])}, bias above {_v(s['significance_factor'])} "
            "Monte Carlo floors) for "
            + ", ".join(wrong)
            + (
                ", and for none of the unbiased estimators"
                if not s["wrong_sign_last_point"].get("poly_unbiased")
                else ""
            )
            if wrong
            else ""
        )
        + ". The best step size differed between tasks (the tuning tables), so ILS needs "
        "tuning per task, as the relaxations' temperature does.\n\n"
    )
    return "".join(out)
