"""Benchmarks: edgeboost against XGBoost, Treelite, TL2cgen and ONNX Runtime.

Latency, throughput, start-up, memory, size, compile time, parity and serving, written as
results.json + REPORT.md + PNG plots by ``edgeboost bench`` (``python -m edgeboost.benchmarks``).
One module per job: ``engines`` (an adapter per engine), ``measure``/``timing`` (latency and
throughput), ``memory``/``coldstart`` (fresh processes), ``build`` (per-target bundles),
``parity``, ``serving``, ``report``/``plots``/``output``, ``runner`` (the run) and ``cli``.

Importing this package loads nothing heavy: the start-up measurements import it in fresh
processes.
"""
