"""The inference engine: continuous batching over `dsv4.model` (nano-vllm's split: sequence state, scheduler
decides, request memory owns each request's blocks and slot, model runner executes, sampler picks, engine
orchestrates and hands out per-step deltas)."""

from dsv4.cache.block_manager import CacheFull

from .async_engine import AsyncEngine
from .config import EngineConfig
from .engine import Engine, StepFailed
from .output import OutputAccumulator, RequestDelta, RequestOutput, TokenLogprob
from .sampling_params import SamplingParams

__all__ = ["AsyncEngine", "CacheFull", "Engine", "EngineConfig", "OutputAccumulator", "RequestDelta", "RequestOutput",
           "SamplingParams", "StepFailed", "TokenLogprob"]
