"""`GET /metrics`: Prometheus metrics of the server and its engine (the names vLLM's dashboards look for have
`dsv4_` in front): queues, KV cache use, token and request counters read from the engine at scrape time, and
time-to-first-token / request-duration histograms observed around each request's stream."""

import time
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dsv4.engine import RequestDelta, SamplingParams

from .backend import Backend

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class EngineCollector:
    """Reads `backend.stats()` (an `EngineStats`) when scraped; nothing for a backend without it."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self):
        stats_of = getattr(self.backend, "stats", None)
        stats = stats_of() if stats_of is not None else None
        if stats is None:
            return
        for name, doc, value in (
                ("requests_running", "Requests in the running batch.", stats.running),
                ("requests_waiting", "Requests queued for admission.", stats.waiting),
                ("kv_cache_usage_ratio", "Fraction of KV blocks in use.", stats.kv_usage),
                ("kv_cache_blocks", "KV blocks in the pool.", stats.blocks_total)):
            yield GaugeMetricFamily(f"dsv4_{name}", doc, value=value)
        for name, doc, value in (
                ("computed_tokens", "Tokens run through the model (prefill and decode).", stats.computed_tokens),
                ("generation_tokens", "Tokens generated.", stats.generated_tokens),
                ("preemptions", "Requests preempted for KV blocks (recomputed later).", stats.preemptions),
                ("prefix_cache_hit_tokens", "Prompt tokens served from the prefix cache.", stats.prefix_hit_tokens),
                ("spec_decode_draft_tokens", "MTP draft tokens verified.", stats.drafted_tokens),
                ("spec_decode_accepted_tokens", "MTP draft tokens accepted.", stats.accepted_tokens)):
            yield CounterMetricFamily(f"dsv4_{name}", doc, value=value)
        finished = CounterMetricFamily("dsv4_requests_finished", "Requests ended, by finish reason.",
                                       labels=["finish_reason"])
        for reason, n in sorted(stats.finished.items()):
            finished.add_metric([reason], n)
        yield finished


class Metrics:
    def __init__(self, backend: Backend):
        self.registry = CollectorRegistry()
        self.registry.register(EngineCollector(backend))
        if (collector := getattr(backend, "collector", None)) is not None:  # a backend's own (upstream.py's)
            self.registry.register(collector)
        self.ttft = Histogram("dsv4_time_to_first_token_seconds", "From the request's start to its first token.",
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.duration = Histogram("dsv4_request_duration_seconds", "From the request's start to its last token.",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)

    async def observe(self, stream: AsyncIterator[RequestDelta]) -> AsyncIterator[RequestDelta]:
        """`stream`, passed through, timed."""
        start, first = time.monotonic(), True
        async for out in stream:
            if first:
                self.ttft.observe(time.monotonic() - start)
                first = False
            if out.finished:
                self.duration.observe(time.monotonic() - start)
            yield out

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MeteredBackend:
    """A backend whose streams are timed by `metrics`; everything else passes through."""

    def __init__(self, backend: Backend, metrics: Metrics):
        self.backend, self.metrics = backend, metrics

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestDelta]:
        return self.metrics.observe(self.backend.stream(prompt_ids, params))
