"""The plots of the estimator benchmark's page (``docs/img/estimators_*.png``), from
the JSON of a run: gradient quality and cost. Matplotlib is imported when a plot is
drawn."""

from __future__ import annotations

from .summary import _hp

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
    # the legend below the panels, in as many rows as it needs (about 30 estimators)
    ncol = 4
    rows = -(-len(handles) // ncol)
    legend_in = 0.2 * rows + 0.2
    fig.set_size_inches(13, 9 + legend_in)
    fig.legend(
        list(handles.values()), list(handles), loc="lower center", ncol=ncol, fontsize=8,
        frameon=False,
    )  # fmt: skip
    batch = results["settings"]["cost"]["batch_size"]
    fig.suptitle(f"Cost per step on {results['cost']['device']}, batch {batch}")
    fig.tight_layout(rect=(0, legend_in / (9 + legend_in), 1, 0.96))
    fig.savefig(path, dpi=80)
    plt.close(fig)
