"""The OpenMP wait policy, chosen before the OpenMP runtime loads.

Torch's CPU kernels and the engine's run on GNU OpenMP, whose idle workers by default
busy-wait for a while after each parallel region. A decode step runs hundreds of short
regions; wherever the cores are shared (with other processes, or with this process's own
Python threads: tokenizer, detokenizer, HTTP server) the spinning workers take the cores
the other threads need, and each region then waits for a worker that was descheduled.
Measured on a 2-core machine shared with other jobs (BENCHMARKS.md), single-stream decode
ran 3-5x faster with sleeping workers than with the default or spinning ones.

The runtime reads its settings once, when it loads (with ``torch``): this module must be
imported before torch, which is why ``nanovllm/__init__.py`` imports it first. A user's own
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is left alone.
"""

from __future__ import annotations

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
