"""`DecodeGraph`: the decode step (every decoding request's one token, one batch) as one compiled graph.

`torch.compile` (inductor; on CPU its C++/OpenMP kernels) traces the whole decode forward -- embed, every block's
hyper-connections, attention (window ring, compressor, indexer top-k, sparse attention), MoE, head -- into a single
graph with static shapes: no graph break, no host synchronization inside. To keep the shapes static:

- the batch is padded to a bucket (1, 2, 4, ... up to `max_batch`), the padding rows running at position 0 in a
  spare request slot with a spare block (`spare_slot`, `spare_block`: one more of each than the engine hands out),
  so their writes land where no request reads;
- the block table is a [bucket, width] tensor, width the longest row's blocks (a power of two past 256 blocks;
  rows padded with the spare block, never -1), and every row's compressed entries are read over the table's whole
  width with a visibility mask (`CompressorState.static_entries`): the indexer's top-k and the HCA gather have the
  table's size. The width is the graph's one dynamic dimension (`maybe_mark_dynamic`): with static shapes every
  doubling of the context compiled a new graph (10 graphs from 128 to 64K tokens); the step branches on the width
  nowhere, so one graph serves every width from 2 blocks up, with width 1 apart (torch specializes sizes of 1).
  (Without the C++ kernels the indexer decodes keys a tile of 8,192 at a time, and that loop's trip count fixes
  the width past 256 blocks: one graph per doubling there.);
- the window ring is the slot's fixed 128 entries; the compressor pools every row each step (masked tensor math, no
  branch on which rows close a block); the MoE sorts the batch's (token, expert) pairs by expert and runs each
  expert's rows through its matrix in the stacked bank in place (`dsv4::grouped_linear`, an opaque op: no expert
  weight copied per token); the host-side checks (positions within the blocks, table ends) run here before the
  call, not inside;
- the lookup tables the step reads (FP8 / e2m1 decoding, Hadamard matrices) are built before tracing
  (`quant.build_tables`) and enter the graph as constant inputs, not rebuilt by it at every step; cached entries
  are gathered and decoded by opaque ops (`gather_index_keys`, `gather_main_entries`), where inductor's own fused
  decode gathered every key of the width a few lanes at a time; the step's opaque ops run as the C++ kernels of
  `dsv4.kernels` (built when a DecodeGraph is made), which the C++ wrapper calls without the interpreter, and
  there the indexer scores its packed keys where it decodes them (`index_scores_packed`: no decoded copy of the
  keys, the step's main growth with the context);
- weights are held in BF16 where that is exact (`compact_weights`: a dequantized FP8 / FP4 / BF16 weight is), dense
  ones multiplied by the C++ kernel `linear_bf16`, the experts' banks by `grouped_linear` (float32 products and
  sums): half the bytes a step streams;
- after a call that compiled a graph the heap is settled (`settle_heap`: one collection, then `gc.freeze`);
- inductor generates the wrapper that calls the kernels in C++ (`cpp_wrapper`): its Python wrapper's own time was
  the largest item of a compiled step's profile (~40% at 16K on the tiny model);
- before each call dynamo checks only the step's inputs (`input_guards_only`: 11 guards where it kept ~2,300 on
  every parameter and pool tensor the graph reads), so the model and the cache must not be replaced under a
  `DecodeGraph` (in-place weight updates are fine: the graph reads the same tensors).

Each batch bucket compiles once per process for width 1 and once for wider tables (the first step there pays it);
inductor's on-disk caches (FX graph and AOT autograd caches, under `TORCHINDUCTOR_CACHE_DIR`, by default
~/.cache/dsv4/inductor) keep a restart from recompiling the kernels, though dynamo still traces the Python.

CUDA graphs: the same structure is what a CUDA graph captures. With the inputs (ids, positions, slots, block table)
copied into static buffers allocated once per bucket, a [max_batch, max_blocks] table and the pools allocated up
front, the step launches the same kernels on the same addresses every time: `torch.compile(mode="reduce-overhead")`
(inductor's cudagraph trees) or a manual `torch.cuda.CUDAGraph` capture of `_step` per bucket replays it. Nothing in
the step allocates by data or reads a value back to the host, which is what capture requires: on a GPU the MoE's
runs go to `moe.grouped_mm` (torch._grouped_mm, BF16, each expert's end row found on the device by searchsorted)
in place of `grouped_linear`, whose CPU op reads the sorted expert ids. Tested on CPU (the same products; traced
whole with no graph break); a capture itself is not verified: no GPU here.
"""

import gc
import os
import re
from pathlib import Path

import torch

from dsv4 import kernels
from dsv4.cache.paged import PagedKVCache
from dsv4.model import Transformer
from dsv4.model.attention.indexer import Indexer
from dsv4.model.linear import Linear
from dsv4.model.moe import MoE
from dsv4.model.quant import build_tables


def inductor_cache_dir() -> Path:
    """Where inductor keeps compiled kernels: $TORCHINDUCTOR_CACHE_DIR as the user set it, else
    ~/.cache/dsv4/inductor (torch's default is a per-user directory under /tmp, which a reboot empties). Torch
    writes its default into the environment on first use, so a value equal to it counts as unset."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # (where torch would put it)

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(home / "dsv4" / "inductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


STEP_INPUTS = frozenset({"ids", "pos", "slots", "tables"})  # the traced step's arguments, as guards name them


def compact_weights(model: Transformer) -> int:
    """Every projection's weight held in BF16 where that keeps its values exactly (`Linear.compact_`; the routed
    experts' stacked banks by `MoE.compact_experts_`) -> how many were. A decode step streams each dense weight and
    its tokens' experts once, bound by memory: float32 copies of the tiny peer checkpoint's FP8 / FP4 weights were
    ~19 MB of the ~22 MB a step reads."""
    routed = {id(lin) for m in model.modules() if isinstance(m, MoE) for e in m.experts for lin in (e.w1, e.w2, e.w3)}
    banks = sum(m.compact_experts_() for m in model.modules() if isinstance(m, MoE))
    return banks + sum(m.compact_() for m in model.modules() if isinstance(m, Linear) and id(m) not in routed)


def settle_heap():
    """One full garbage collection, then what survives is frozen out of the collector's sight (`gc.freeze`).
    Compiling leaves ~1.2M long-lived Python objects (dynamo's and inductor's); every full collection then walked
    them all, a pause of 1-2 s that perf put at ~55% of a decode run's CPU on a loaded machine. Called after each
    compile (rare): objects frozen here that die later in a cycle are not reclaimed."""
    gc.collect()
    gc.freeze()


def input_guards_only(entries) -> list[bool]:
    """Dynamo's guards to keep: those on the step's own inputs (their dtypes, sizes and the width's range: what tells
    one compiled graph from another), none on the model, the cache or module globals. A graph guards every
    parameter, pool tensor and attribute it read (~2,300 guards, 0.4-1.8 ms before every decode step); those never
    change while a `DecodeGraph` lives (the model and the cache are fixed at construction, weights are not swapped
    under it), so checking them is pure cost. Guards without a source name (grad mode, the shape
    environment's bounds such as `2 <= width <= 256`) are kept."""
    return [not e.is_global and (not e.name or re.split(r"[.\[]", e.name, maxsplit=1)[0] in STEP_INPUTS)
            for e in entries]


def bucket(n: int, limit: int | None = None) -> int:
    """The smallest power of two >= n (at most `limit`, when n fits under it)."""
    b = 1 << max(0, n - 1).bit_length()
    return min(b, limit) if limit is not None and n <= limit else b


class DecodeGraph:
    def __init__(self, model: Transformer, cache: PagedKVCache, max_batch: int, spare_slot: int, spare_block: int,
                 backend: str = "inductor"):
        """backend: torch.compile's (\"aot_eager\" traces the same graph without generating kernels: for tests)."""
        if not 0 <= spare_slot < cache.max_requests or not 0 <= spare_block < cache.num_blocks:
            raise ValueError(f"spare slot {spare_slot} / block {spare_block} outside the cache's {cache.max_requests} "
                             f"slots / {cache.num_blocks} blocks")
        self.model, self.cache, self.max_batch = model, cache, max_batch
        self.spare_slot, self.spare_block = spare_slot, spare_block
        self.device = model.embed.weight.device
        self.shapes: set[tuple[int, int]] = set()  # (bucket, width) pairs compiled so far
        for m in model.modules():
            if isinstance(m, MoE):
                m.stack_experts()
        build_tables(self.device, (model.config.index_head_dim,))
        inductor_cache_dir()
        kernels.enable()  # the opaque ops in C++: called from the compiled step without the interpreter
        if kernels.op("linear_bf16") is not None:
            compact_weights(model)
        # a table is only as wide as its longest row where widths share a graph: every width when the indexer scores
        # packed keys in C++, else up to its one decode tile, past which each doubling compiles its own graph
        self.one_graph_width = 1 << 62 if kernels.op("index_scores_packed") else min(
            (m.decode_tile * m.ratio // cache.block_size for m in model.modules() if isinstance(m, Indexer)),
            default=1 << 62)
        # one graph per (bucket, width); the default limit of 8 recompiles would fall back to eager at long contexts
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.backend = backend
        self._compiled = self._compile(self._step)
        self._drafting = None  # compiled on first use (speculative decoding under load)

    def _compile(self, step):
        options = {"guard_filter_fn": input_guards_only}
        if self.backend == "inductor":  # the step's kernel calls from C++: the Python wrapper was ~40% of a step
            options["cpp_wrapper"] = True
        return torch.compile(step, backend=self.backend, dynamic=False, fullgraph=True, options=options)

    def __call__(self, ids: list[int], positions: list[int], slots: list[int],
                 tables: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
        """One token per request: ids, positions and slots [b], tables (each request's block-table tensor and its
        length) -> logits [b, vocab] float32."""
        return self._run(self._compiled, ids, positions, slots, tables)[:len(ids)]

    def drafting(self, ids: list[int], positions: list[int], slots: list[int],
                 tables: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """As a call, and the MTP layer run on each row's greedy next token (its window kept complete for
        speculation) -> (logits [b, vocab], MTP logits [b, vocab]: the draft after the greedy token)."""
        if self._drafting is None:
            self._drafting = self._compile(self._draft_step)
        logits, mtp = self._run(self._drafting, ids, positions, slots, tables)
        return logits[:len(ids)], mtp[:len(ids)]

    def _run(self, compiled, ids, positions, slots, tables):
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        with torch.no_grad():  # (inference mode's tensors cannot be traced by AOT autograd: no version counters)
            out = compiled(*self._inputs(ids, positions, slots, tables))
        if torch._dynamo.utils.counters["stats"]["unique_graphs"] != graphs:  # this call compiled a graph
            settle_heap()
        return out

    def _inputs(self, ids: list[int], positions: list[int], slots: list[int], tables: list[tuple[torch.Tensor, int]]):
        """The step's inputs padded to their bucket: ids [B,1], positions [B], slots [B], tables [B,width]."""
        b = len(ids)
        if not 0 < b <= self.max_batch:
            raise ValueError(f"a decode batch has 1..{self.max_batch} requests; got {b}")
        for p, (_, n) in zip(positions, tables, strict=True):
            if p >= n * self.cache.block_size:
                raise ValueError(f"position {p} is past the {n} blocks allocated ({n * self.cache.block_size} tokens)")
        rows, blocks = bucket(b, self.max_batch), max(n for _, n in tables)
        width = blocks if 1 < blocks <= self.one_graph_width else bucket(blocks)
        pad = rows - b
        ids_t = torch.tensor([[i] for i in ids] + [[0]] * pad, device=self.device)
        pos_t = torch.tensor(positions + [0] * pad, device=self.device)
        slot_t = torch.tensor(slots + [self.spare_slot] * pad, device=self.device)
        table_t = torch.full((rows, width), self.spare_block, dtype=torch.long, device=self.device)
        for i, (table, n) in enumerate(tables):
            table_t[i, :n] = table[:n]
        if width > 1:  # one graph for every width the step's code does not branch on (see the module's docstring)
            torch._dynamo.maybe_mark_dynamic(table_t, 1)
        self.shapes.add((rows, width))
        return ids_t, pos_t, slot_t, table_t

    def _step(self, ids: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        # ids [B,1], pos [B], slots [B], tables [B,width] -> logits [B,vocab]: the traced region
        return self._draft_step(ids, pos, slots, tables, drafts=False)[0]

    def _draft_step(self, ids: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor, tables: torch.Tensor,
                    drafts: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        view = self.cache.fixed_view(slots, tables)
        model = self.model
        h = model.hidden.__wrapped__(model, ids, view, pos)  # (undecorated: no inference mode inside the graph)
        logits = model.logits(h)[:, -1]
        if not drafts:
            return logits, None
        mtp = model.mtp_logits.__wrapped__(model, h, logits.argmax(-1)[:, None], view, pos)
        return logits, mtp[:, -1]
