"""The zoo: Pyro's own models with discrete guide sites, trained with every relevant
estimator to convergence, from which the plugin's default is chosen.

Run a model's suite with ``python -m benchmarks run zoo MODEL`` from the repository
root (``--quick`` for a smoke-sized run); ``python -m benchmarks report zoo`` writes
the docs pages from the result files in ``benchmarks/results/zoo/``.

* :mod:`.record`: the run record (clean commit, command, seeds, machine);
* :mod:`.training`: training to convergence, with curves against steps and time;
* :mod:`.estimators`: the estimators, as a user would swap them in;
* :mod:`.mixtures`: the README quickstart mixture and Pyro's Dirichlet-process
  mixture tutorial (Gaussian and Poisson parts);
* :mod:`.run`: tuning on tuning seeds, then the reported seeds;
* :mod:`.report`: tables, paired differences and plots.
"""
