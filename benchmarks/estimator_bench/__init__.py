"""The estimator benchmark (``python -m benchmarks run estimators``: ``benchmarks/estimators.py``),
one idea per module.

* :mod:`.common`: settings of a run, seeding, the environment record (shared with
  ``benchmarks/step_time.py``), JSON helpers;
* :mod:`.models`: the tasks' model code (from the examples, kept here);
* :mod:`.registry`: every gradient estimator as one :class:`~.registry.Estimator` entry;
* :mod:`.tasks`: the problems (proposal toy, mixture of experts, digits VAEs, polynomial);
* :mod:`.gradients`: gradient quality against the exact gradient;
* :mod:`.training`: tuning and multi-seed training runs;
* :mod:`.cost`: time per step and peak memory against K and the number of sites;
* :mod:`.report`: the markdown page and the plots.
"""
