"""Benchmarks: edgeboost against XGBoost, Treelite, TL2cgen, ONNX Runtime and oneDAL.

Latency, throughput, the one-row overhead of Python, start-up, memory, size, compile time,
parity and serving, written as results.json + REPORT.md + PNG plots by ``edgeboost bench``
(``python -m edgeboost.benchmarks``). One module per job:

- ``engines``: the one table of engines, an adapter each (edgeboost keys name their backend);
- ``measure``/``timing``: latency and throughput; ``overhead``: one-row calls from C and from
  Python; ``memory``/``coldstart``: fresh processes; ``build``: per-target bundles;
  ``parity``; ``serving``/``soak``; ``lambda_coldstart``: the Lambda zip's cold start;
- ``results``: what a run measured, as typed records (results.json is their JSON form);
  ``backend_comparison``: the two backends side by side; ``performance_targets``: the limits
  the report judges;
- ``report`` (a module per section), ``plots``, ``output``; ``runner`` (the run) and ``cli``.

Importing this package loads nothing heavy: the start-up measurements import it in fresh
processes.
"""
