"""The decode step as one compiled graph (`DecodeGraph`, EngineConfig(compile=True)): no graph break in the traced
region, and the engine's output on the compiled path equals the eager engine's -- batched decode of requests at
different positions (a padding row in the batch's bucket), MTP speculation under load (the MTP layer in the
graph) and prefix sharing.

Most tests trace with the "aot_eager" backend: the same fixed-shape graph (padded batch, fixed block table, masked
compressor, gathered MoE) run by eager kernels, so it agrees with eager to float32 roundoff and compiles in
seconds. The inductor test (its C++ kernels, minutes to compile on a loaded machine) is marked slow.
"""

import copy
import re

import pytest
import torch
import torch._dynamo.testing
from torch._dynamo.types import GuardFilterEntry

from dsv4 import kernels
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.engine.decode_graph import DecodeGraph, bucket, input_guards_only
from dsv4.model import Transformer, preset
from dsv4.model.init import init_random_
from dsv4.model.linear import Linear
from dsv4.model.moe import MoE

# decoding at different positions; the first crosses a 128-token HCA block while decoding, all cross CSA blocks
PROMPTS = [list(range(3, 123)), list(range(7, 207)), [9, 8, 7, 6]]
COMMON = list(range(10, 310))  # prefix sharing: 2 full blocks of 128 in common
GREEDY = SamplingParams(temperature=0, max_tokens=12)
SCORED = SamplingParams(temperature=0, max_tokens=12, logprobs=2)  # not speculated: the plain decode graph
CONFIG = dict(num_blocks=16, max_num_seqs=4, prefix_cache_size=4, speculative=True, speculative_max_batch=1)


@pytest.fixture(scope="module")
def model():
    # no FP8 activation rounding: it turns float32 roundoff into whole FP8 steps (see conftest.tiny_model)
    config = preset("test").replace(simulate_act_quant=False)
    return init_random_(Transformer(config, torch.float32), seed=4).eval()


def _compiled(model, backend: str = "aot_eager", **config) -> Engine:
    c = EngineConfig(**{**CONFIG, **config, "compile": True})
    engine = Engine(model, None, c)
    if backend != "inductor":
        engine.runner.graph = DecodeGraph(model, engine.memory.cache, c.max_num_seqs, c.max_num_seqs, c.num_blocks,
                                          backend=backend)
    return engine


@pytest.fixture(scope="module")
def compiled(model):
    return _compiled(model)


@pytest.fixture(scope="module")
def eager(model):
    return Engine(model, None, EngineConfig(**CONFIG))


def test_bucket():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    assert bucket(3, 3) == 3 and bucket(5, 6) == 6 and bucket(7, 6) == 8


@pytest.fixture(scope="module")
def explained(model):
    """The drafting step (main layers and the MTP layer) traced by dynamo."""
    engine = Engine(model, None, EngineConfig(**CONFIG, compile=True))
    graph = engine.runner.graph
    with torch.no_grad():
        tables = [(torch.tensor([0, 1]), 2), (torch.tensor([2, 3]), 2), (torch.tensor([4]), 1)]
        return torch._dynamo.explain(graph._draft_step)(*graph._inputs([5, 7, 9], [3, 130, 9], [0, 1, 2], tables))


def test_the_decode_region_has_no_graph_break(explained):
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_the_graph_reads_expert_weights_in_place(explained, model):
    """The stacked expert banks are read only by the grouped product (3 per MoE: w1, w3, w2), never indexed per
    token (which copied each (token, slot) pair's expert matrices)."""
    nodes = list(explained.graphs[0].graph.nodes)
    banks = [n for n in nodes if n.op == "placeholder" and "_ffn_bank_" in n.name]
    n_moe = model.config.n_layers + model.config.n_mtp_layers
    assert len(banks) == 3 * n_moe
    assert {str(u.target) for b in banks for u in b.users} == {"dsv4_cpu.grouped_linear.default"}
    assert sum(str(n.target) == "dsv4_cpu.grouped_linear.default" for n in nodes) == 3 * n_moe


def test_the_graph_reads_lookup_tables_as_constants(explained):
    """The FP8 / e2m1 coding tables and the Hadamard matrix enter the graph as inputs (built once, before
    tracing), not rebuilt by it at every step."""
    nodes = list(explained.graphs[0].graph.nodes)
    inputs = " ".join(n.name for n in nodes if n.op == "placeholder")
    for table in ("fp8", "fp4_codes", "hadamard_128"):
        assert f"quant_tables_{table}" in inputs
    assert not any(n.target is torch.arange and 256 in n.args for n in nodes)  # the byte tables' construction


def test_the_graph_scores_indexer_keys_in_one_opaque_op(explained, model):
    """Each CSA layer's indexer scores its packed MXFP4 keys through one `dsv4_cpu::index_scores_packed` (the C++
    kernel of dsv4.kernels, which DecodeGraph builds): no decoded copy of the keys, and no e2m1 decoding in the
    graph itself, which inductor fused into a scalar gather over every key of the table's width."""
    nodes = list(explained.graphs[0].graph.nodes)
    config = model.config
    csa = sum(config.compress_ratio(i) == 4 for i in range(config.n_layers + config.n_mtp_layers))
    assert csa and sum(str(n.target) == "dsv4_cpu.index_scores_packed.default" for n in nodes) == csa
    assert not any(str(n.target) == "dsv4_cpu.gather_index_keys.default" for n in nodes)
    assert not any("fp4_bytes" in n.name for n in nodes)


@pytest.mark.slow
def test_one_graph_serves_the_table_widths(model):
    """The block table's width is a dynamic dimension of the graph: widths 2..32 blocks share one graph (every
    width, with the indexer scoring packed keys in C++), width 1 has its own (a size of 1 is always specialized). It
    was one graph per power of two."""
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    engine = Engine(model, None, EngineConfig(num_blocks=32, max_num_seqs=1, compile=True))
    graph = DecodeGraph(model, engine.memory.cache, 1, 1, 32, backend=counter)
    for width in (1, 2, 3, 8, 32):
        logits = graph([5], [width * 128 - 1], [0], [(torch.arange(width), width)])
        assert logits.shape == (1, model.config.vocab_size)
    assert counter.frame_count == 2


def _scored(engine: Engine, prompts) -> list:
    return engine.generate(prompts, SCORED)


def test_batched_decode_at_different_positions_equals_eager(compiled, eager):
    want, got = _scored(eager, PROMPTS), _scored(compiled, PROMPTS)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    for a, b in zip(got, want, strict=True):
        assert max(abs(x.logprob - y.logprob) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
    assert (4, 2) in compiled.runner.graph.shapes  # 3 requests padded to 4, tables of 2 blocks
    assert compiled.memory.blocks.num_used == 0


@pytest.mark.slow
def test_speculation_under_load_runs_the_mtp_layer_in_the_graph(compiled, eager):
    def spec(engine):
        stats = engine.stats()
        return stats.drafted_tokens, stats.accepted_tokens

    before = spec(eager), spec(compiled)
    want = [o.token_ids for o in eager.generate(PROMPTS + [COMMON], GREEDY)]
    assert [o.token_ids for o in compiled.generate(PROMPTS + [COMMON], GREEDY)] == want
    assert compiled.runner.graph._drafting is not None  # 4 decoding > speculative_max_batch: the drafting graph
    # the drafts verified once load drops (the prompts' lengths differ, so they finish apart) came from the graph's
    # MTP layer in one engine and from eager's in the other: the same drafts, as often right
    (d0, a0), (d1, a1) = before
    assert spec(compiled)[0] - d1 == spec(eager)[0] - d0 and spec(compiled)[1] - a1 == spec(eager)[1] - a0


def test_prefix_sharing_on_the_compiled_path(compiled, eager):
    a, b = COMMON + [100, 101, 102], COMMON + [7, 8, 9, 11, 12]
    want = _scored(eager, [b])[0]
    compiled.generate([a], SCORED)
    hits = compiled.prefix.hit_tokens
    got = _scored(compiled, [b])[0]
    assert compiled.prefix.hit_tokens - hits == 256
    assert got.token_ids == want.token_ids


@pytest.mark.slow
def test_inductor_greedy_equals_eager():
    """Inductor's C++ kernels, on a model without the FP8 rounding of cached KV entries: inductor reorders float32
    reductions (~1e-7), and with the rounding on some of those become whole FP8 steps in the cache, which persist
    and compound over the steps (logits ~1e-2 apart per step here; a random model's flat logits then part at its
    near-ties). Without it the paths agree to float32 roundoff (measured 2e-6 in the logits)."""
    config = preset("test").replace(simulate_act_quant=False, simulate_kv_quant=False)
    model = init_random_(Transformer(config, torch.float32), seed=4).eval()
    eager = Engine(model, None, EngineConfig(**CONFIG))
    want, got = _scored(eager, PROMPTS), _scored(_compiled(model, backend="inductor"), PROMPTS)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    for a, b in zip(got, want, strict=True):
        assert max(abs(x.logprob - y.logprob) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4


@pytest.mark.slow
def test_the_compiled_step_copies_no_per_slot_pool(model):
    """Inductor's generated step for 16 request slots allocates nothing the size of a per-slot pool (17 rows: the
    slots and the spare): every slot's window ring and compressor state are written in place. Reading a pool before
    writing it, or writing it twice with index_put, made inductor copy the whole pool at every step."""
    from torch._inductor.utils import run_and_get_code

    engine = Engine(model, None, EngineConfig(num_blocks=8, max_num_seqs=16, compile=True))
    graph = DecodeGraph(model, engine.memory.cache, 16, 16, 8)
    slot_pools = {tuple(t.shape) for t in engine.memory.cache.tensors() if t.size(0) == 17}
    assert slot_pools  # (the window rings and compressor states)
    _, code = run_and_get_code(graph, [5], [300], [0], [(torch.arange(3), 3)])
    lines = [line.strip() for c in code for line in c.splitlines()]
    assert any("aoti_torch_empty_strided" in line for line in lines)  # (the C++ wrapper: sizes in int arrays)
    pool_sized = re.compile(r"empty_strided_cpu\(\(17,|int_array_\d+\[\] = \{17L,")  # Python or C++ wrapper
    copies = [line for line in lines if pool_sized.search(line)]
    assert copies == []


@pytest.mark.parametrize("packed_scores", [True, False])
def test_tables_are_as_wide_as_the_longest_row_within_one_graph(model, monkeypatch, packed_scores):
    """Within the widths one graph serves, a table is as wide as its longest row (no power-of-two padding: every
    row's entries are read over the whole width). With the indexer scoring packed keys in C++ that is every width;
    without, up to its one decode tile, and past it a power of two (one graph per doubling)."""
    if not packed_scores:
        op = kernels.op
        monkeypatch.setattr(kernels, "op",
                            lambda name, on=None: None if name == "index_scores_packed" else op(name, on))
    engine = Engine(model, None, EngineConfig(num_blocks=600, max_num_seqs=2, compile=True))
    graph = DecodeGraph(model, engine.memory.cache, 2, 2, 600, backend="eager")
    # (without: the indexer's 8,192-key tile over 32 CSA entries a block)
    assert graph.one_graph_width == (1 << 62 if packed_scores else 256)
    for blocks, width in ((1, 1), (3, 3), (200, 200), (256, 256), (300, 300 if packed_scores else 512)):
        *_, table = graph._inputs([5, 6], [0, blocks * 128 - 1], [0, 1], [(torch.arange(1), 1),
                                                                          (torch.arange(blocks), blocks)])
        assert table.shape == (2, width)
        assert (table[0, 1:] == 600).all() and (table[1, blocks:] == 600).all()  # padded with the spare block


def _guard(name: str, is_global: bool = False, guard_type: str = "TENSOR_MATCH") -> GuardFilterEntry:
    return GuardFilterEntry(name=name, has_value=False, value=None, guard_type=guard_type, derived_guard_types=(),
                            is_global=is_global, orig_guard=None)


def test_only_the_step_inputs_are_guarded():
    """The guards that pick a graph (the inputs' sizes and dtypes, the shape environment's width range, grad mode)
    stay; those on the model, the cache and globals go (they never change under a DecodeGraph)."""
    kept = ["ids", "pos", "slots", "tables", "tables.size()[1]", ""]
    dropped = ["L['self'].model.layers[0].attn.wq_a.weight", "self.cache.layers[1].entries", "idsx",
               "G['__import_dsv4_dot_model_dot_moe'].F"]
    entries = [_guard(n) for n in kept] + [_guard(n, is_global=n.startswith("G[")) for n in dropped]
    assert input_guards_only(entries) == [True] * len(kept) + [False] * len(dropped)


def test_a_compile_settles_the_heap_once(model, monkeypatch):
    """After a call that compiled a graph, one full collection and `gc.freeze`: compiling leaves ~1.2M long-lived
    objects that every later full collection would walk (1-2 s pauses mid-decode). A call that compiles nothing
    collects nothing."""
    import gc

    from dsv4.engine import decode_graph

    collections, settle = [], decode_graph.settle_heap
    monkeypatch.setattr(decode_graph, "settle_heap", lambda: collections.append(1) or settle())
    engine = Engine(model, None, EngineConfig(num_blocks=8, max_num_seqs=2, compile=True))
    graph = DecodeGraph(model, engine.memory.cache, 2, 2, 8, backend="aot_eager")
    frozen = gc.get_freeze_count()
    graph([5], [3], [0], [(torch.arange(1), 1)])
    assert len(collections) == 1 and gc.get_freeze_count() > frozen
    graph([6], [4], [0], [(torch.arange(1), 1)])
    assert len(collections) == 1
    gc.unfreeze()


def test_compact_weights_decode_as_the_float32_ones():
    """A model whose weights BF16 holds exactly (as dequantized FP8 / FP4 checkpoints' are): a DecodeGraph holds its
    projections and lm head in BF16 (dense ones multiplied by `dsv4_cpu::linear_bf16`, the experts' banks by
    `grouped_linear`) and decodes greedily as an eager engine on a float32 copy does."""
    config = preset("test").replace(simulate_act_quant=False)
    exact = init_random_(Transformer(config, torch.float32), seed=5).eval()
    with torch.no_grad():
        for p in exact.parameters():
            p.copy_(p.bfloat16().float())
    reference = copy.deepcopy(exact)
    compiled = _compiled(exact)
    linears = [m for m in exact.modules() if isinstance(m, Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert exact.head.weight.dtype == torch.bfloat16  # the lm head too (its products stay float32)
    banks = [m.bank for m in exact.modules() if isinstance(m, MoE)]
    assert banks and all(w.dtype == torch.bfloat16 for bank in banks for w in bank)
    moe = next(m for m in exact.modules() if isinstance(m, MoE))  # each expert's weight still a view of the bank
    assert moe.experts[1].w2.weight.data_ptr() == moe.bank[1][1].data_ptr()
    want = Engine(reference, None, EngineConfig(**CONFIG)).generate(PROMPTS, GREEDY)
    got = compiled.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
