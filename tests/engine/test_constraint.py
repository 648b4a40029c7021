"""Grammar-constrained decoding on a random-weight tiny model: JSON replies that parse and validate for randomized
schemas, forced DSML tool calls that DeepSeek's recipe and dsv4's strict parser read as valid calls of the right
tool (thinking and non-think), outputs that finish within max_tokens, and grammars that accept exactly the bytes
the encoder renders."""

import json
import random

import jsonschema
import pytest
import torch

from dsv4.agent.tools import strict_parameters
from dsv4.encoding import FORCED_TOOL_CALLS, encode_messages, parse_completion
from dsv4.encoding.dsml import render_tool_calls
from dsv4.encoding.grammar import RAW_VALUE_OPEN, response_grammar, strict_tools_grammar, tool_call_grammar
from dsv4.encoding.tokens import DSML, EOS, PARAM_CLOSE, THINK_END, TOOL_CALLS_OPEN
from dsv4.engine import Engine, EngineConfig, SamplingParams
from dsv4.engine.constraint import Constraint, GrammarTokenizer, grammar_error
from dsv4.engine.sampling_params import Grammar
from dsv4.train.tokenizer import train_tokenizer
from tests.encoding.test_parse_strategies import recipe_parse

from .conftest import Collector

TOOLS = [
    {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "unit": {"type": "string", "enum": ["C", "F"]}}, "required": ["city", "days"]}},
    {"name": "search", "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "filters": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["query"]}},
]
SPANS = ((RAW_VALUE_OPEN, PARAM_CLOSE),)


@pytest.fixture(scope="module")
def engine(tiny_model, tokenizer):
    return Engine(tiny_model, tokenizer, EngineConfig(num_blocks=64, max_num_seqs=16))


def single(tokenizer) -> dict[str, int]:
    return {t: tokenizer.token_to_id(t) for t in (THINK_END, EOS, DSML)}


def random_schema(rng: random.Random, depth: int = 0) -> dict:
    """A strict-mode object schema of scalars, enums, bounded arrays and nested objects."""
    kinds = ["integer", "number", "boolean", "string", "enum", "array"] + (["object"] if depth < 2 else [])
    props = {}
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(kinds)
        if kind == "integer":
            s = {"type": "integer", **({"minimum": rng.randint(-5, 5)} if rng.random() < 0.5 else {})}
        elif kind == "number":
            s = {"type": "number"}
        elif kind == "boolean":
            s = {"type": "boolean"}
        elif kind == "string":
            s = {"type": "string", **({"maxLength": rng.randint(1, 8)} if rng.random() < 0.5 else {})}
        elif kind == "enum":
            s = {"type": "string", "enum": rng.sample(["red", "green", "blue", "x y", "é"], 3)}
        elif kind == "array":
            s = {"type": "array", "items": rng.choice([{"type": "integer"}, {"type": "string"}, {"type": "null"}]),
                 "minItems": rng.randint(0, 2), "maxItems": 4}
        else:
            s = random_schema(rng, depth + 1)
        props[f"k{i}_{kind}"] = s
    return {"type": "object", "properties": props, "required": rng.sample(list(props), rng.randint(0, len(props))),
            "additionalProperties": False}


# max_tokens above each schema's shortest reply (up to ~80 tokens in the larger set: below it no reply can fit)
@pytest.mark.parametrize("n,max_tokens", [(6, 64), pytest.param(64, 128, marks=pytest.mark.slow)])
def test_json_schema_outputs_parse_and_validate_for_randomized_schemas(engine, tokenizer, n, max_tokens):
    rng = random.Random(12)
    schemas = [random_schema(rng) for _ in range(n)]
    prompt = encode_messages([{"role": "user", "content": "Reply in JSON."}], thinking_mode="chat")
    params = [SamplingParams(temperature=1.0, seed=i, max_tokens=max_tokens, grammar=Grammar(response_grammar(
        {"type": "json_schema", "json_schema": {"schema": s}}, thinking=False, single_tokens=single(tokenizer))))
        for i, s in enumerate(schemas)]
    outs = [o for k in range(0, n, 16) for o in engine.generate([prompt] * len(params[k:k + 16]), params[k:k + 16])]
    for schema, out in zip(schemas, outs, strict=True):
        assert out.finish_reason == "stop" and out.token_ids[-1] == 1, out
        jsonschema.validate(json.loads(out.text), schema)


def test_json_object_in_thinking_mode_reasons_then_replies_json(engine, tokenizer):
    prompt = encode_messages([{"role": "user", "content": "Reply in JSON."}])
    lark = response_grammar({"type": "json_object"}, thinking=True, single_tokens=single(tokenizer))
    out = engine.generate([prompt], SamplingParams(temperature=1.0, seed=3, max_tokens=40,
                                                   grammar=Grammar(lark, THINK_END, 20)))[0]
    message = parse_completion(out.text + EOS, thinking_mode="thinking")
    assert out.finish_reason == "stop" and isinstance(json.loads(message.content), dict)
    assert out.token_ids.index(tokenizer.token_to_id(THINK_END)) <= 40 - 20  # reasoning kept 20 tokens for the reply


@pytest.mark.slow  # the server's tests run the same through the openai and anthropic clients
def test_a_forced_tool_call_is_a_valid_call_of_the_right_tool(engine, tokenizer):
    # required and named, thinking and non-think, two seeds each: one batch
    cases = [(thinking, name, seed) for thinking in (False, True) for name in (None, "search") for seed in (0, 1)]
    prompts, params = [], []
    for thinking, name, seed in cases:
        choice = {"type": "function", "function": {"name": name}} if name else "required"
        msgs = [{"role": "system", "content": "", "tools": [{"type": "function", "function": t} for t in TOOLS]},
                {"role": "user", "content": "Weather in Paris?"}]
        prompts.append(encode_messages(msgs, thinking_mode="thinking" if thinking else "chat", tool_choice=choice))
        lark = tool_call_grammar(TOOLS, name, thinking=thinking, single_tokens=single(tokenizer))
        grammar = Grammar(lark, THINK_END if thinking else None, 50 if thinking else 0, SPANS)
        params.append(SamplingParams(temperature=1.0, seed=seed, max_tokens=100, grammar=grammar))
    for (thinking, name, _), out in zip(cases, engine.generate(prompts, params), strict=True):
        mode = "thinking" if thinking else "chat"
        assert out.finish_reason == "stop"
        text = (FORCED_TOOL_CALLS if not thinking else "") + out.text + EOS
        message = parse_completion(text, thinking_mode=mode)  # dsv4's strict parser: raises on malformed DSML
        _, content, calls = recipe_parse(text, mode)
        assert content == "" and calls and len(calls) == len(message.tool_calls)
        for call, (recipe_name, recipe_args) in zip(message.tool_calls, calls, strict=True):
            tool = next(t for t in TOOLS if t["name"] == call.name)
            assert call.name == recipe_name and (name is None or call.name == name)
            jsonschema.validate(json.loads(call.arguments), tool["parameters"])
            assert json.loads(recipe_args) == json.loads(call.arguments)


def test_a_required_call_in_thinking_mode_is_never_cut_off_by_the_length_limit(engine, tokenizer):
    # Random weights never close reasoning by themselves: the engine closes it so that the call fits.
    lark = tool_call_grammar(TOOLS[:1], None, thinking=True, single_tokens=single(tokenizer))
    prompt = encode_messages([{"role": "user", "content": "hi"}])
    limits = [66, 90, 160]
    outs = engine.generate([prompt] * len(limits), [SamplingParams(
        temperature=1.0, seed=5, max_tokens=n, grammar=Grammar(lark, THINK_END, n // 2, SPANS)) for n in limits])
    for n, out in zip(limits, outs, strict=True):
        assert out.finish_reason == "stop" and len(out.token_ids) <= n
        assert parse_completion(out.text + EOS).tool_calls[0].name == "get_weather"


CALLS = [("get_weather", {"city": 'Pa"ris\n<b>', "days": 3, "unit": "F"}), ("search", {"query": "", "filters": []}),
         ("search", {"query": "dsv4 </b> ok"})]


def small_tokenizer():
    """The built-in model's kind of tokenizer (`dsv4.train.tokenizer`: DSML and </think> are special tokens)."""
    return train_tokenizer(["hello world " * 50, render_tool_calls(CALLS, empty_line=False) * 5], vocab_size=400)


@pytest.mark.parametrize("kind", ["v4", "small"])
def test_the_tool_call_grammar_accepts_exactly_the_rendered_calls(engine, tokenizer, kind):
    tok = tokenizer if kind == "v4" else small_tokenizer()
    tokens = engine._grammar_tokens if kind == "v4" else GrammarTokenizer(tok, tok.get_vocab_size(), 1)
    lark = tool_call_grammar(TOOLS, None, thinking=False, single_tokens=single(tok))
    text = render_tool_calls(CALLS, empty_line=False)[len(FORCED_TOOL_CALLS):] + EOS

    def accepts(completion: str) -> bool:
        c = Constraint(Grammar(lark), tokens, 10_000)
        return c.replay(tok.encode(completion, add_special_tokens=False).ids) and c.matcher.is_stopped()

    assert accepts(text)
    assert not accepts(text.replace('name="search"', 'name="fetch"'))  # undeclared tool
    assert not accepts(text.replace('"days" string="false">3', '"days" string="false">0'))  # below the minimum
    assert not accepts(text.replace('"unit" string="true">F', '"unit" string="true">K'))  # not in the enum
    assert not accepts(text.replace('<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n', ""))
    assert not accepts(text.replace('"filters" string="false">[]', '"filters" string="false">[ ]'))  # JSON style
    assert not accepts(text.replace("dsv4 </b> ok", "dsv4 <｜DSML｜b> ok"))  # parsers take a DSML marker as markup


def test_a_small_tokenizer_model_finishes_a_forced_call_with_its_own_dsml_token():
    # A random-logit stand-in for the built-in model: its tokenizer has DSML and </think> as special tokens,
    # which a grammar must emit by id (llguidance never spells a special token in pieces).
    tok = small_tokenizer()
    tokens = GrammarTokenizer(tok, tok.get_vocab_size(), 1)
    lark = tool_call_grammar(TOOLS, "get_weather", thinking=True, single_tokens=single(tok))
    c = Constraint(Grammar(lark, THINK_END, 60, SPANS), tokens, 120)
    g, ids = torch.Generator().manual_seed(0), []
    for _ in range(120):
        allowed = c.allowed()
        logits = torch.randn(tok.get_vocab_size(), generator=g).masked_fill(~allowed, float("-inf"))
        token = int(torch.multinomial(logits.softmax(-1), 1, generator=g))
        assert c.advance(token)
        ids.append(token)
        if token == 1:
            break
    assert c.matcher.is_stopped() and tok.token_to_id(DSML) in ids
    assert parse_completion(tok.decode(ids, skip_special_tokens=False)).tool_calls[0].name == "get_weather"


@pytest.mark.parametrize("thinking", [False, True], ids=["non-think", "thinking"])
@pytest.mark.parametrize("kind", ["v4", "small"])
def test_the_strict_tools_grammar_accepts_content_or_valid_calls(engine, tokenizer, kind, thinking):
    # tool_choice "auto" with strict tools: the model may answer or call; a block it opens holds valid calls only
    tok = tokenizer if kind == "v4" else small_tokenizer()
    tokens = engine._grammar_tokens if kind == "v4" else GrammarTokenizer(tok, tok.get_vocab_size(), 1)
    lark = strict_tools_grammar(STRICT_TOOLS, thinking=thinking, single_tokens=single(tok))
    head = "The user wants weather." + THINK_END if thinking else ""
    block = render_tool_calls(STRICT_CALLS, empty_line=False)

    def accepts(completion: str) -> bool:
        c = Constraint(Grammar(lark, THINK_END if thinking else None), tokens, 10_000)
        return c.replay(tok.encode(head + completion, add_special_tokens=False).ids) and c.matcher.is_stopped()

    assert accepts("It is sunny in <b>Paris</b>.\n\nBye." + EOS) and accepts(EOS)  # an answer, an empty one
    assert accepts("Let me check." + block + EOS) and accepts(block + EOS)  # calls after content, calls alone
    assert not accepts("Let me check." + block.replace('name="search"', 'name="fetch"') + EOS)  # undeclared tool
    assert not accepts("Let me check." + block.replace('"unit" string="true">F', '"unit" string="true">K') + EOS)
    assert not accepts("Let me check." + block[:-len("</｜DSML｜tool_calls>")] + EOS)  # a block left open
    assert not accepts("Let me check." + block[2:] + EOS)  # the block without its blank line: not a V4 call
    assert not accepts("A stray " + DSML + "invoke marker." + EOS)  # parsers take any marker as markup
    assert not accepts(block + "\nmore text" + EOS)  # nothing after the block but EOS
    assert not accepts(render_tool_calls(CALLS, empty_line=False) + EOS)  # a strict call gives every parameter
    assert accepts(block.replace('"unit" string="true">F', '"unit" string="false">null') + EOS)  # null: not given


# strict form: every property required, the optional ones nullable (a string one written raw, or null)
STRICT_TOOLS = [{**t, "parameters": strict_parameters(t["parameters"]), "strict": True} for t in TOOLS]
STRICT_CALLS = [("get_weather", {"city": 'Pa"ris\n<b>', "days": 3, "unit": "F"}),
                ("search", {"query": "", "filters": []}), ("search", {"query": "dsv4 </b> ok", "filters": None})]


def test_strict_tools_calls_sampled_under_the_grammar_parse_and_finish_in_time():
    # random logits (the small tokenizer's model stand-in) once the reply has opened a block: whatever is sampled
    # parses strictly as calls that validate, closed by the engine's finish plan before max_tokens
    tok = small_tokenizer()
    tokens = GrammarTokenizer(tok, tok.get_vocab_size(), 1)
    lark = strict_tools_grammar(STRICT_TOOLS, thinking=False, single_tokens=single(tok))
    for seed in range(3):
        c = Constraint(Grammar(lark, raw_spans=SPANS, finish_from=TOOL_CALLS_OPEN), tokens, 150)
        ids = tok.encode("Checking.\n\n<" + DSML + "tool_calls>\n", add_special_tokens=False).ids
        assert c.replay(ids)
        g = torch.Generator().manual_seed(seed)
        while len(ids) < 150 and ids[-1] != 1:
            logits = torch.randn(tok.get_vocab_size(), generator=g).masked_fill(~c.allowed(), float("-inf"))
            ids.append(int(torch.multinomial(logits.softmax(-1), 1, generator=g)))
            assert c.advance(ids[-1])
        assert ids[-1] == 1 and c.matcher.is_stopped()
        message = parse_completion(tok.decode(ids, skip_special_tokens=False), thinking_mode="chat")
        assert message.content == "Checking." and message.tool_calls
        for call in message.tool_calls:
            schema = next(t for t in STRICT_TOOLS if t["name"] == call.name)["parameters"]
            jsonschema.validate(json.loads(call.arguments), schema)


def test_free_text_under_strict_tools_is_not_finished_by_the_engine():
    # near max_tokens a forced reply is finished by the engine's plan; a reply that may stay free text is not
    # (an EOS of the engine's would make cut-off content read as a whole answer) until it opens a tool-call block
    tok = small_tokenizer()
    tokens = GrammarTokenizer(tok, tok.get_vocab_size(), 1)
    lark = strict_tools_grammar(STRICT_TOOLS, thinking=False, single_tokens=single(tok))
    content = tok.encode("hello world " * 6, add_special_tokens=False).ids
    limit = len(content) + 2
    finishing = Constraint(Grammar(lark), tokens, limit)
    free = Constraint(Grammar(lark, finish_from=TOOL_CALLS_OPEN), tokens, limit)
    assert finishing.replay(content) and free.replay(content)
    assert finishing.allowed().sum() == 1  # the plan: EOS now
    assert free.allowed().sum() > 100


def test_an_unsupported_schema_is_named_before_anything_runs():
    lark = response_grammar({"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}, thinking=False,
                            single_tokens={})
    assert "objekt" in grammar_error(lark)
    assert grammar_error(response_grammar({"type": "json_object"}, thinking=False, single_tokens={})) is None


def test_a_snapshot_of_a_constrained_request_resumes_under_its_grammar(engine, tokenizer, tmp_path):
    grammar = Grammar(response_grammar({"type": "json_object"}, thinking=False, single_tokens=single(tokenizer)))
    prompt = encode_messages([{"role": "user", "content": "JSON please."}], thinking_mode="chat")
    request = engine.add_request(prompt, SamplingParams(temperature=1.0, seed=1, max_tokens=40, grammar=grammar))
    for _ in range(6):
        engine.step()
    engine.snapshot(request, tmp_path / "snap.safetensors")
    engine.abort(request)
    resumed = engine.resume(tmp_path / "snap.safetensors")  # the grammar comes back from the snapshot's metadata
    out = Collector(engine).until_done(resumed)[0]
    assert out.finish_reason == "stop" and isinstance(json.loads(out.text), dict)


def test_a_strict_tool_without_a_required_list_requires_every_property(engine, tokenizer):
    # the prompt renders a strict tool's schema with every property required (deepseek-recipe's rule): so does the
    # grammar, or it would let a call leave out what the prompt told the model it must give
    tools = [{"name": "search", "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "limit": {"type": "integer"}}}, "strict": True}]
    lark = strict_tools_grammar(tools, thinking=False, single_tokens=single(tokenizer))

    def accepts(completion: str) -> bool:
        c = Constraint(Grammar(lark), engine._grammar_tokens, 10_000)
        return c.replay(tokenizer.encode(completion, add_special_tokens=False).ids) and c.matcher.is_stopped()

    assert accepts(render_tool_calls([("search", {"query": "x", "limit": 3})], empty_line=False) + EOS)
    assert not accepts(render_tool_calls([("search", {"query": "x"})], empty_line=False) + EOS)


def test_importing_the_engine_leaves_torchs_compiler_unloaded():
    # llguidance.torch decorates a function with torch.compile at import, which loads dynamo and inductor
    # (~2 s and ~100 MB for every engine process, constrained or not): the engine reads masks through numpy
    import subprocess
    import sys

    code = ("import sys, dsv4.engine, dsv4.server\n"
            "print(sorted(m for m in sys.modules if m.startswith(('torch._inductor', 'torch._dynamo'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
