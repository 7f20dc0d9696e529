"""Shared ArviZ helper for the examples: draws -> InferenceData, a CSV table and a PNG.

Typical use, after training, with draws from :class:`pyro.infer.Predictive`::

    from posterior_summary import summarize_posterior

    samples = Predictive(model, guide=guide, num_samples=1000)(x)
    idata = summarize_posterior(samples, os.path.join(args.out, "my_example"))

writes ``<out_prefix>_summary.csv`` (``az.summary``) and ``<out_prefix>_posterior.png``
(``az.plot_forest``: mean and 94% HDI of every scalar, chains combined) and returns the
``arviz.InferenceData``. The table is also printed unless ``print_table=False``.

Shapes: each tensor is ``(num_samples,) + site_shape``, as ``Predictive`` returns it
(one chain); with ``chain_dim=True`` it is ``(num_chains, num_draws) + site_shape``,
for instance independent training runs as chains. With a single chain ArviZ cannot
compute ``r_hat``, so that column is left out of the table.

The examples run as scripts (``python examples/X.py``), which puts ``examples/`` on
``sys.path``, so ``from posterior_summary import summarize_posterior`` works there.
"""

from __future__ import annotations

import logging
import os
import warnings

import arviz as az
import numpy as np
import torch

__all__ = ["summarize_posterior"]


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bool:
            value = value.long()
        return value.numpy()
    return np.asarray(value)


def summarize_posterior(
    samples: dict[str, torch.Tensor],
    out_prefix: str,
    var_names=None,
    *,
    chain_dim: bool = False,
    hdi_prob: float = 0.94,
    print_table: bool = True,
    title: str | None = None,
    plot_var_names=None,
    xlabel: str | None = None,
) -> az.InferenceData:
    """Summarize posterior (or other) draws with ArviZ.

    :param dict samples: site name -> tensor of draws, ``(num_samples,) + shape`` (as from
        ``pyro.infer.Predictive``), or ``(chains, draws) + shape`` with ``chain_dim=True``.
    :param str out_prefix: path prefix; ``<out_prefix>_summary.csv`` and
        ``<out_prefix>_posterior.png`` are written (the folder is created).
    :param var_names: the variables to summarize and plot (default: all).
    :param bool chain_dim: whether the tensors carry a leading chain dimension.
    :param float hdi_prob: the HDI mass for the table and the plot.
    :param bool print_table: print the summary table.
    :param str title: a title for the plot.
    :param plot_var_names: the variables to plot, when they differ from the table's
        (default: ``var_names``), for instance to keep quantities of one scale on one axis.
    :param str xlabel: a label for the plot's value axis.
    :returns: the ``arviz.InferenceData`` holding the draws (group ``posterior``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        raise ValueError("summarize_posterior got no samples")
    posterior = {}
    for name, value in samples.items():
        array = _to_numpy(value)
        if not chain_dim:
            array = array[None]
        if array.ndim < 2:
            raise ValueError(f"{name!r}: expected at least (chains, draws), got {array.shape}")
        posterior[name] = array
    idata = az.from_dict(posterior=posterior)
    num_chains = next(iter(posterior.values())).shape[0]

    folder = os.path.dirname(out_prefix)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with warnings.catch_warnings():
        # ArviZ warns that r_hat needs two chains; the column is dropped below instead.
        warnings.simplefilter("ignore")
        # ArviZ logs through its own logger object (arviz._log), not logging.getLogger.
        logger = getattr(az, "_log", None) or logging.getLogger("arviz")
        level = logger.level
        if num_chains < 2:
            logger.setLevel(logging.ERROR)
        try:
            table = az.summary(idata, var_names=var_names, hdi_prob=hdi_prob)
        finally:
            logger.setLevel(level)
    if num_chains < 2 and "r_hat" in table.columns:
        table = table.drop(columns="r_hat")
    table.to_csv(f"{out_prefix}_summary.csv")
    if print_table:
        import pandas as pd

        with pd.option_context(
            "display.max_rows", 500, "display.max_columns", 20, "display.width", 200
        ):
            print(table)

    if plot_var_names is None:
        plot_var_names, num_rows = var_names, len(table)
    else:
        num_rows = sum(int(np.prod(posterior[n].shape[2:])) for n in plot_var_names)
    axes = az.plot_forest(
        idata,
        var_names=plot_var_names,
        combined=True,
        hdi_prob=hdi_prob,
        figsize=(7, 1.0 + 0.28 * num_rows),
    )
    ax = np.asarray(axes).ravel()[0]
    fig = ax.figure
    if title:
        ax.set_title(f"{title}\n{ax.get_title()}", fontsize=11)
    if xlabel:
        ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(f"{out_prefix}_posterior.png", dpi=100)
    plt.close(fig)
    return idata
