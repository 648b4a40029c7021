"""`EngineStats`: what an operator watches (queues, KV use, token and request counts), read between steps."""

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class EngineStats:
    # counters since the engine started
    computed_tokens: int = 0
    """Tokens run through the model (prefill chunks and decode steps)."""
    generated_tokens: int = 0
    finished: Counter = field(default_factory=Counter)
    """Requests ended, by finish reason (stop, length, abort, error)."""
    # read from the engine's parts when asked
    running: int = 0
    waiting: int = 0
    blocks_used: int = 0
    blocks_total: int = 0
    preemptions: int = 0
    prefix_hit_tokens: int = 0
    drafted_tokens: int = 0
    accepted_tokens: int = 0

    @property
    def kv_usage(self) -> float:
        return self.blocks_used / self.blocks_total if self.blocks_total else 0.0
