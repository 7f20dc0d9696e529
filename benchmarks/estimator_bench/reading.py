"""The written reading of the results page, generated from ``results["summary"]``.

Every number in this text is a value of the summary (stored in the JSON); the
explanations (why) state the mechanism of ``docs/method.md``, without numbers.
"""

from __future__ import annotations


def _v(x):
    return "n/a" if x is None else f"{x:g}"


def text(results, s) -> str:
    out = ["## Reading\n\n"]
    if "unbiased_max_bias_over_floor" in s:
        ratios = s.get("ils_min_bias_over_floor_last_point", {})
        out.append(
            "**Gradients: the referee checks itself.** Over all "
            f"{s['unbiased_rows']} measurements of the unbiased estimators (REINFORCE, "
            "baselines, RLOO, IndeCateR, MuProp, REBAR, RELAX), the distance of the mean "
            "from the exact gradient was at most "
            f"{_v(s['unbiased_max_bias_over_floor'])} times its Monte Carlo floor (for an "
            "unbiased estimator the ratio is of order one). For ILS at the end of the "
            "trajectory the smallest ratio over its step sizes and projections was "
            + ", ".join(f"{_v(v)} (`{k}`)" for k, v in ratios.items())
            + ": a ratio well above a few is bias that more draws do not remove. The "
            "tables give every estimator at every value of its own grid; no estimator "
            "or family is singled out as best here.\n\n"
        )
    cost = s.get("cost")
    if cost:
        out.append(
            f"**Cost.** At K = {cost['K']} (4 sites), a `TraceILS_ELBO` step took "
            f"{_v(cost['ils_ms'])} ms against {_v(cost['ref_ms'])} ms for `{cost['ref']}` "
            f"({_v(cost['ratio'])}x), all estimators timed in one process; the cost section "
            "has the whole sweep. Exact enumeration's time and memory grow with K^sites.\n\n"
        )
    wrong = s.get("wrong_sign_last_point", {}).get("poly")
    out.append(
        "**Why.** ILS sends the logits `pi - pi_D = (pi - z) + (z - pi_D)`: a zero-mean "
        "term that does not depend on the loss, plus the loss signal `z - pi_D`, of the "
        "order of the step size times `dL/dz` at the sampled vertex. Its expectation is "
        "the gradient of a KL towards a target built from one first-order step at that "
        "vertex, not the gradient of the expected loss: it is biased (the ratios above), "
        "and the bias does not shrink with more draws, while REINFORCE, RLOO and the "
        "control variates are unbiased and lose only to variance. Straight-through and "
        "ReinMax are exact for a linear objective and ILS is not"
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
        + ". The gradient tables show every estimator at every value of its own grid, so "
        "how much each depends on its step size or temperature can be read there.\n\n"
    )
    return "".join(out)
