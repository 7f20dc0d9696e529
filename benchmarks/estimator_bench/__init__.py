"""The estimator benchmark (``python -m benchmarks run estimators``: ``benchmarks/estimators.py``),
one idea per module.

* :mod:`.common`: settings of a run, seeding, the environment record (that of
  :mod:`benchmarks.environment`, shared with the other benchmarks), JSON helpers;
* :mod:`.models`: the tasks' model code (from the examples, kept here);
* :mod:`.registry`: every gradient estimator as one :class:`~.registry.Estimator` entry
  (Pyro's own and the ILS family); :mod:`.peers`: those of the package's other modules;
  :mod:`.drawing`: how an entry's sites are drawn (:func:`~.drawing.prepare`);
* :mod:`.tasks`: the problems (proposal toy, mixture of experts, digits VAEs, polynomial),
  one module per family;
* :mod:`.gradients`: gradient quality against the exact gradient;
* :mod:`.cost`: time per step and peak memory against K and the number of sites;
* :mod:`.report`, :mod:`.summary`, :mod:`.reading`, :mod:`.plots`: the markdown page,
  the numbers its reading quotes, the reading, the plots.

Two parts only: training comparisons are made in the zoo (:mod:`benchmarks.zoo`),
under the review protocol.
"""
