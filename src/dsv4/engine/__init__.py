"""The inference engine: continuous batching over `dsv4.model` (nano-vllm's split: sequence state, scheduler
decides, block manager owns blocks, model runner executes, sampler picks, engine orchestrates)."""

from dsv4.cache.block_manager import CacheFull

from .async_engine import AsyncEngine
from .config import EngineConfig
from .engine import Engine
from .sampling_params import SamplingParams
from .sequence import RequestOutput, TokenLogprob

__all__ = ["AsyncEngine", "CacheFull", "Engine", "EngineConfig", "RequestOutput", "SamplingParams", "TokenLogprob"]
