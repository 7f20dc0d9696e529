"""The plots of the estimator benchmark's page (``docs/img/estimators_*.png``), from
the JSON of a run: training curves against steps, wall time and evaluations, gradient
quality, cost, and the proposal's toy grid. Matplotlib is imported when a plot is
drawn."""

from __future__ import annotations

from .common import mean_sd
from .summary import _hp, _primary

FAMILY_COLORS = {
    "exact": "black",
    "score function": "tab:orange",
    "control variate": "tab:brown",
    "relaxation": "tab:green",
    "straight-through": "tab:purple",
    "ILS": "tab:blue",
}
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
MARKERS = ["s", "^", "D", "v"]  # not "o": the cost plot marks every line with it


def _style(results, key, index):
    """Colour by family, line style by rank in the family; once the styles run out,
    a marker as well, so that no two estimators share a look."""
    fam = results["estimators"][key]["family"]
    style = {
        "color": FAMILY_COLORS.get(fam, "grey"),
        "ls": LINESTYLES[index % len(LINESTYLES)],
        "lw": 2.2 if fam == "ILS" else 1.3,
    }
    cycle = index // len(LINESTYLES)
    if cycle:
        style.update(marker=MARKERS[(cycle - 1) % len(MARKERS)], ms=5, markevery=0.1)
    return style


def _styles(results) -> dict:
    """One look per estimator for every panel of a figure: its rank in its family
    is counted over all estimators, not over those a panel happens to show."""
    fam_index, styles = {}, {}
    for key, entry in results["estimators"].items():
        fam = entry["family"]
        fam_index[fam] = fam_index.get(fam, -1) + 1
        styles[key] = _style(results, key, fam_index[fam])
    return styles


def _curves(entry, x, y):
    runs = [r for r in entry["runs"] if not r["failed"]]
    if not runs:
        return None
    n = min(len(r["curve"]) for r in runs)
    xs = [sum(r["curve"][i][x] for r in runs) / len(runs) for i in range(n)]
    ys = [[r["curve"][i].get(y) for r in runs] for i in range(n)]
    m = [mean_sd(v)[0] for v in ys]
    lo = [min((u for u in v if u is not None), default=None) for v in ys]
    hi = [max((u for u in v if u is not None), default=None) for v in ys]
    return xs, m, lo, hi


def plot_training(results, x, path, xlabel, logx=False):
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt

    tasks = list(results["training"])
    ncol = 3
    nrow = (len(tasks) + 1 + ncol - 1) // ncol
    fig, grid = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.4 * nrow), squeeze=False)
    cells = [ax for row in grid for ax in row]
    axes = cells[: len(tasks)]
    for ax in cells[len(tasks) :]:
        ax.axis("off")
    handles = {}
    styles = _styles(results)
    for ax, task in zip(axes, tasks, strict=True):
        primary, hib = _primary(results, task)
        for key, entry in results["training"][task].items():
            c = _curves(entry, x, primary)
            if c is None:
                continue
            xs, m, lo, hi = c
            if logx:
                xs, m, lo, hi = xs[1:], m[1:], lo[1:], hi[1:]
            keep = [i for i, v in enumerate(m) if v is not None and lo[i] is not None]
            xs, m, lo, hi = ([a[i] for i in keep] for a in (xs, m, lo, hi))
            st = styles[key]
            (h,) = ax.plot(xs, m, **st, label=results["estimators"][key]["label"])
            ax.fill_between(xs, lo, hi, color=st["color"], alpha=0.08)
            handles[results["estimators"][key]["label"]] = h
        if primary == "objective":
            ax.set_yscale("log")
        title = f"{task}: {results['tasks'][task]['title']}"
        ax.set_title("\n".join(textwrap.wrap(title, 55)), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_ylabel(results, task))
        if logx:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        if hib:
            ys = [
                v
                for key, e in results["training"][task].items()
                for r in e["runs"]
                if not r["failed"]
                for v in [r["curve"][-1].get(primary)]
                if v is not None
            ]
            if ys:
                top = max(ys)
                ax.set_ylim(top - 3 * max(1e-3, top - sorted(ys)[len(ys) // 4]) - 0.5, top + 0.2)
    legend_ax = cells[len(tasks)] if len(cells) > len(tasks) else None
    if legend_ax is not None:
        # One column while it fits the cell, two beyond (the ILS variants made it long).
        ncol = 1 if len(handles) <= 18 else 2
        legend_ax.legend(
            list(handles.values()), list(handles), loc="center", fontsize=8 - ncol, ncol=ncol
        )
    else:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=6, fontsize=8)
    fig.suptitle(
        "Training: mean over seeds (lines), min-max over seeds (bands); colour = family\n"
        "(black exact, orange score function, brown control variates, green relaxations, "
        "purple straight-through, blue ILS)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _ylabel(results, task):
    name = task.split("_")[0]
    return {
        "toy": "E[f(z)] exact (log scale; lower is better)",
        "poly": "E[(z-t)^2] - min (log scale; lower is better)",
        "moe": "exact bound per point (higher is better)",
        "vae": "ELBO per image, train subset (higher is better)",
    }[name]


def plot_gradients(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["gradients"])
    fig, axes = plt.subplots(len(tasks), 1, figsize=(17, 3.6 * len(tasks)))
    axes = [axes] if len(tasks) == 1 else list(axes)
    for ax, task in zip(axes, tasks, strict=True):
        g = results["gradients"][task]
        points = list(g["points"])
        labels = []
        for pi, point in enumerate(points):
            rows = [r for r in g["points"][point]["rows"] if not r.get("failed")]
            if pi == 0:
                labels = [f"{r['label']}" + (f" ({_hp(r['hp'])})" if r["hp"] else "") for r in rows]
            xs = [i + (pi - (len(points) - 1) / 2) * 0.22 for i in range(len(rows))]
            ax.bar(
                xs,
                [r["cos_draw"] for r in rows],
                width=0.22,
                label=f"step {g['points'][point]['step']} of the exact-gradient trajectory",
                color=plt.cm.viridis(pi / max(1, len(points) - 1)),
            )
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("mean cosine of one draw\nwith the exact gradient")
        ax.set_ylim(-1, 1.05)
        ax.set_title(f"{results['tasks'][task]['title']}: {g['draws']} draws per bar", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.002, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_cost(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["cost"]["rows"] if not r.get("failed")]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    handles = {}
    styles = _styles(results)
    for col, (sweep, xlab) in enumerate(
        (("K", "categories K (4 latent sites)"), ("L", "latent sites L (K = 8)"))
    ):
        xkey = "categories" if sweep == "K" else "latents"
        for key in results["estimators"]:
            pts = sorted(
                (r[xkey], r) for r in rows if r["sweep"] == sweep and r["estimator"] == key
            )
            if not pts:
                continue
            st = styles[key]
            for row, metric in ((0, "median_ms"), (1, "peak_mib")):
                (h,) = axes[row][col].plot(
                    [p[0] for p in pts], [max(p[1][metric], 1e-3) for p in pts],
                    **({"marker": "o", "ms": 3} | st),
                )  # fmt: skip
                handles[results["estimators"][key]["label"]] = h
        for row, ylab in (
            (0, "median wall time per SVI step (ms)"),
            (1, "peak memory in the step (MiB)"),
        ):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(xlab)
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.3, which="both")
    fig.legend(
        list(handles.values()), list(handles), loc="lower center", ncol=6, fontsize=8,
        frameon=False,
    )  # fmt: skip
    batch = results["settings"]["cost"]["batch_size"]
    fig.suptitle(f"Cost per step on {results['cost']['device']}, batch {batch}")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_proposal(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    toy = results["tasks"]["toy"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    cmaps = {
        "ils_euclidean": plt.cm.Blues,
        "ils_normalize": plt.cm.Greens,
        "ils_reference": plt.cm.Purples,
        "gumbel_kl": plt.cm.Reds,
        "gumbel_density": plt.cm.Oranges,
    }
    for row in results["proposal"]:
        hp = row["hp"]
        v = hp.get("step_size", hp.get("temperature"))
        vals = sorted(
            {
                r["hp"].get("step_size", r["hp"].get("temperature"))
                for r in results["proposal"]
                if r["estimator"] == row["estimator"]
            }
        )
        shade = 0.45 + 0.5 * vals.index(v) / max(1, len(vals) - 1)
        label = f"{row['label']} " + _hp(hp, lr=False)
        st = {"color": cmaps[row["estimator"]](shade), "lw": 1.5}
        for ax, metric in zip(axes, ("kl_true_pi", "objective", "sampled_loss"), strict=True):
            c = _curves(row, "step", metric)
            if c is None:
                continue
            xs, m, _, _ = c
            pts = [(a, b) for a, b in zip(xs, m, strict=True) if a > 0 and b is not None and b > 0]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **st)
    axes[0].set_ylabel("KL(true || pi), summed over the 5 categoricals")
    axes[0].set_title("What the proposal plots: KL(true || pi)")
    axes[1].axhline(toy["optimum"], color="k", ls=":", label="minimum: point mass on the mode")
    axes[1].axhline(toy["objective_at_pi_true"], color="k", ls="--", label="value at pi = true")
    axes[1].set_ylabel("E over exact draws of -sum(true * log(z + 1e-8))")
    axes[1].set_title("What is minimized (exact expectation)")
    axes[2].set_ylabel("f on each estimator's own draws (mean over the interval)")
    axes[2].set_title("Sampled objective (relaxed draws for Gumbel-Softmax)")
    from matplotlib.ticker import NullFormatter

    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        if ax is not axes[1]:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("Adam step")
        ax.grid(alpha=0.3, which="both")
    h, lab = axes[1].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("The proposal's toy, its own settings (mean over seeds)")
    fig.tight_layout(rect=(0, 0.15, 1, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)


__all__ = ["plot_cost", "plot_gradients", "plot_proposal", "plot_training"]
