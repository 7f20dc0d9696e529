"""The SVI step-time benchmark (``python -m benchmarks run cost``:
``benchmarks/step_time.py``, its command line and run), one idea per module.

* :mod:`.variants`: the variants timed, the Gaussian-mixture model and guides they
  run, the data;
* :mod:`.timing`: the interleaved timing loop, its statistics, and the ``--profile``
  measurements;
* :mod:`.report`: where the results and the page go, and the page
  (``docs/performance.md``) rendered from the results.

The machine and versions record is :mod:`benchmarks.environment` (shared with the
other benchmarks).
"""
