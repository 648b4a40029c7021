"""The upstreams an `UpstreamBackend` spreads requests over: what the server knows of each, which one last served
a prompt prefix (its prefix cache holds it), and their `/metrics`."""

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

AFFINITY_BLOCK = 64  # prompt tokens between the prefix hashes an upstream is remembered by
AFFINITY_ENTRIES = 1 << 16  # prefix hashes remembered at most (least recently used dropped)


@dataclass
class Upstream:
    """One endpoint and what the server knows of it."""

    url: str  # base URL, without /v1
    model: str | None = None
    max_model_len: int | None = None
    outstanding: int = 0
    requests: int = 0
    errors: int = 0
    reachable: bool | None = None  # None: not tried yet
    last_error: str | None = None
    down_until: float = 0.0

    def state(self) -> dict:
        return {"url": self.url, "model": self.model, "reachable": self.reachable, "outstanding": self.outstanding,
                "requests": self.requests, "errors": self.errors, "last_error": self.last_error}


class PrefixAffinity:
    """Which upstream last served each prompt prefix (hashes at every `AFFINITY_BLOCK` tokens, chained, so one
    pass over the prompt hashes all of them)."""

    def __init__(self, entries: int = AFFINITY_ENTRIES):
        self.entries = entries
        self.table: OrderedDict[bytes, int] = OrderedDict()

    @staticmethod
    def keys(prompt_ids: list[int]) -> list[bytes]:
        h, keys = hashlib.blake2b(digest_size=16), []
        for start in range(0, len(prompt_ids) - AFFINITY_BLOCK + 1, AFFINITY_BLOCK):
            h.update(b"".join(t.to_bytes(4, "little") for t in prompt_ids[start:start + AFFINITY_BLOCK]))
            keys.append(h.copy().digest())
        return keys

    def lookup(self, keys: list[bytes]) -> tuple[int | None, int]:
        """(the upstream that served the longest of these prefixes, how many blocks long it is)."""
        for n in range(len(keys), 0, -1):
            if (index := self.table.get(keys[n - 1])) is not None:
                return index, n
        return None, 0

    def record(self, keys: list[bytes], index: int) -> None:
        for key in keys:
            self.table[key] = index
            self.table.move_to_end(key)
        while len(self.table) > self.entries:
            self.table.popitem(last=False)


class UpstreamCollector:
    """`/metrics` of the upstreams: reachable, outstanding requests, requests and errors, by URL."""

    def __init__(self, backend):  # an UpstreamBackend: its `upstreams` are read at each scrape
        self.backend = backend

    def collect(self):
        gauges = {name: GaugeMetricFamily(f"dsv4_upstream_{name}", doc, labels=["url"]) for name, doc in (
            ("reachable", "1 when the upstream answered its last request, 0 when it refused the connection."),
            ("outstanding_requests", "Requests sent to the upstream and not yet finished."))}
        counters = {name: CounterMetricFamily(f"dsv4_upstream_{name}", doc, labels=["url"]) for name, doc in (
            ("requests", "Requests sent to the upstream."),
            ("errors", "Requests the upstream failed (error status, timeout, broken or dropped stream)."))}
        for u in self.backend.upstreams:
            gauges["reachable"].add_metric([u.url], 1.0 if u.reachable else 0.0)
            gauges["outstanding_requests"].add_metric([u.url], u.outstanding)
            counters["requests"].add_metric([u.url], u.requests)
            counters["errors"].add_metric([u.url], u.errors)
        yield from gauges.values()
        yield from counters.values()
