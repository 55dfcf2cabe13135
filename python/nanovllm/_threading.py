"""Settings the native runtimes read once, when they load (with ``torch``).

This module must be imported before torch, which is why ``nanovllm/__init__.py`` imports
it first. A setting the user made in the environment is left alone.

OpenMP spin count. Torch's CPU kernels and the engine's run on GNU OpenMP. A decode step
runs about eight parallel regions per layer, back to back, each a few tens of
microseconds: workers that go to sleep after every region (OMP_WAIT_POLICY=PASSIVE) are
woken ~170 times a step, which cost a third of an int8 decode step on the 2-core machine of
BENCHMARKS.md. Workers that spin without bound (GNU's default spins 300,000 times) take
the cores that the other threads need wherever cores are shared (other processes, or this
process's own tokenizer, detokenizer and HTTP threads), and each region then waits for a
descheduled worker. A short spin (30,000 iterations, tens of microseconds) covers the gap
between the regions of one step and sleeps between steps. Measured single-stream int8
decode, Qwen2.5-0.5B, 2 cores: quiet 80.7 tok/s (sleeping 59.7, default 82.6); with two
busy processes on the same cores 39.2 tok/s (sleeping 26.6, default 22.6).

Transparent huge pages. Torch backs its CPU tensors of 2 MB and more with huge pages when
``THP_MEM_ALLOC_ENABLE`` is set: the weights (read whole at every decode step) and the KV
cache then cost a TLB miss per 2 MB instead of per 4 KB. Measured: matrix-vector products
over 418 MB of bf16 weights 7-10% faster (BENCHMARKS.md).
"""

from __future__ import annotations

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "30000"
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
