"""One measurement: call a predictor ``calls`` times and time every call (stdlib only).

Wall time per call comes from ``time.perf_counter_ns`` around each call; CPU time from
``time.process_time_ns`` around the whole loop, which counts every thread of the process
(XGBoost, GTIL, TL2cgen and ONNX Runtime predict on several threads) and nothing of the
other processes that share the machine.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Measurement", "time_calls"]


@dataclass(frozen=True, slots=True)
class Measurement:
    batch: int  # rows per call
    calls: int
    wall_ns: int  # the whole loop
    cpu_ns: int  # the whole loop, all threads of the process that predicts
    per_call_ns: Sequence[int]  # each call alone

    @property
    def rows_per_second(self) -> float:
        return self.batch * self.calls / (self.wall_ns * 1e-9)

    @property
    def rows_per_cpu_second(self) -> float:
        return self.batch * self.calls / (max(self.cpu_ns, 1) * 1e-9)


def time_calls(
    predict: Callable[[Any], Any], inputs: Sequence[Any], batch: int, calls: int
) -> Measurement:
    """Call ``predict`` on ``inputs`` in turn, ``calls`` times. The garbage collector runs
    before the loop, not during it unless the predictor itself allocates enough."""
    count = len(inputs)
    samples = [0] * calls
    clock, cpu_clock = time.perf_counter_ns, time.process_time_ns
    gc.collect()
    cpu_start, wall_start = cpu_clock(), clock()
    for i in range(calls):
        item = inputs[i % count]
        start = clock()
        predict(item)
        samples[i] = clock() - start
    wall, cpu = clock() - wall_start, cpu_clock() - cpu_start
    return Measurement(batch=batch, calls=calls, wall_ns=wall, cpu_ns=cpu, per_call_ns=samples)
