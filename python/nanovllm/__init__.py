"""nano-vllm: a small, fast, readable LLM inference engine (C++/LibTorch core, Python face)."""

# First: sets the OpenMP wait policy, which only takes effect before torch loads.
from nanovllm import _threading  # noqa: F401
from nanovllm._version import __version__
from nanovllm.llm import LLM
from nanovllm.outputs import CompletionOutput, Logprob, RequestOutput, StreamDelta
from nanovllm.request_tracker import RequestTracker
from nanovllm.sampling_params import SamplingParams
from nanovllm.session import EngineSession

__all__ = [
    "LLM",
    "CompletionOutput",
    "EngineSession",
    "Logprob",
    "RequestOutput",
    "RequestTracker",
    "SamplingParams",
    "StreamDelta",
    "__version__",
]
