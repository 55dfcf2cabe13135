"""Settings the native runtimes read once, when they load (with ``torch``).

This module must be imported before torch, which is why ``nanovllm/__init__.py`` imports
it first. A setting the user made in the environment is left alone.

OpenMP wait policy. Torch's CPU kernels and the engine's run on GNU OpenMP, whose idle
workers by default busy-wait for a while after each parallel region. A decode step runs
hundreds of short regions; wherever the cores are shared (with other processes, or with
this process's own Python threads: tokenizer, detokenizer, HTTP server) the spinning
workers take the cores the other threads need, and each region then waits for a worker
that was descheduled. Measured on a 2-core machine shared with other jobs (BENCHMARKS.md),
decode ran 2-10x faster with sleeping workers than with the default or spinning ones.

Transparent huge pages. Torch backs its CPU tensors of 2 MB and more with huge pages when
``THP_MEM_ALLOC_ENABLE`` is set: the weights (read whole at every decode step) and the KV
cache then cost a TLB miss per 2 MB instead of per 4 KB. Measured: matrix-vector products
over 418 MB of bf16 weights 7-10% faster (BENCHMARKS.md).
"""

from __future__ import annotations

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
