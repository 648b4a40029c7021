"""The server under hostile requests (#16): bodies over the size limit refused before they are read, prompts too
long for the context refused before they are tokenized, connections that never finish their request head closed,
a flood of half-open connections that cannot keep a legitimate request out, the API docs behind the API key, and
the key read from a file rather than the command line."""

import asyncio
import contextlib
import io
import json
import resource
import socket
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from tokenizers import Tokenizer, normalizers

from dsv4.cli import build_parser
from dsv4.cli.serve_cmds import api_key_of
from dsv4.server import create_app
from dsv4.server.app import DEFAULT_MAX_REQUEST_BYTES
from dsv4.server.background import serve_process, serving
from dsv4.server.connections import ConnectionLimits
from dsv4.server.prompt_bound import CHUNK, longest_token_bytes

from .conftest import ScriptedBackend, client_for

MIB = 1 << 20
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


async def asgi_post(app, path: str, *, content_length: int | None, body_bytes: int, key: str | None = None,
                    stall: bool = False) -> tuple[int, dict, int]:
    """POSTs `body_bytes` bytes in 1 MiB chunks straight through ASGI -> (status, JSON reply, bytes the app
    pulled from the client). `content_length`: the header (None: a chunked body, which has none); `stall`: the
    body never ends (the client stops sending after `body_bytes`)."""
    headers = [(b"content-type", b"application/json")] + ([(b"x-api-key", key.encode())] if key else [])
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("dsv4", 80), "state": {}}
    chunk, pulled, sent = b"x" * MIB, 0, []
    never = asyncio.Event()

    async def receive():
        nonlocal pulled
        if pulled >= body_bytes:
            await never.wait()  # the client stays connected, sending nothing more
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": stall or pulled < body_bytes}

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 60)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_body_declared_over_the_limit_is_refused_unread(real_tokenizer, path):
    app = create_app(ScriptedBackend(real_tokenizer))
    status, reply, pulled = asyncio.run(asgi_post(app, path, content_length=32 * MIB, body_bytes=32 * MIB))
    assert status == 413 and pulled == 0
    error = reply["error"]
    assert str(DEFAULT_MAX_REQUEST_BYTES) in error["message"] and "--max-request-bytes" in error["message"]
    if path == "/v1/messages":
        assert reply["type"] == "error" and error["type"] == "request_too_large"
    else:
        assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("key", [None, "sekrit"])
def test_a_chunked_body_is_cut_off_at_the_limit(real_tokenizer, key):
    app = create_app(ScriptedBackend(real_tokenizer), max_request_bytes=4 * MIB, api_key=key)
    status, reply, pulled = asyncio.run(asgi_post(app, "/v1/chat/completions", content_length=None,
                                                  body_bytes=64 * MIB, key=key))
    assert status == 413 and reply["error"]["code"] == "request_too_large"
    assert pulled <= 5 * MIB  # read up to the limit, not the 64 MiB sent


def test_large_bodies_held_at_once_share_a_budget(real_tokenizer):
    """A 4 MiB limit: 16 MiB of body past the first MiB of each may be held at once. Five stalled 4 MiB bodies
    hold 15; a sixth is told 503, and gets through once they are gone."""
    app = create_app(ScriptedBackend(real_tokenizer), max_request_bytes=4 * MIB)

    def post(stall: bool):
        return asgi_post(app, "/v1/chat/completions", content_length=None, body_bytes=4 * MIB, stall=stall)

    async def main():
        stalled = [asyncio.create_task(post(stall=True)) for _ in range(5)]
        await asyncio.sleep(0.5)
        busy = await post(stall=False)
        for task in stalled:
            task.cancel()
        await asyncio.gather(*stalled, return_exceptions=True)
        return busy, await post(stall=False)

    (status, reply, _), (after, _, _) = asyncio.run(main())
    assert status == 503 and reply["error"]["code"] == "server_busy" and "retry" in reply["error"]["message"]
    assert after == 400  # read whole, then found not to be JSON


def test_the_413_comes_back_over_http_before_any_of_the_body(real_tokenizer):
    """Only the head is sent (it declares 10 GB): the answer arrives, and the server closes the connection rather
    than reading on to reuse it."""
    with serving(create_app(ScriptedBackend(real_tokenizer))) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: dsv4\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 10000000000\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):  # ends when the server closes
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 ") and b"request_too_large" in reply


class Spy(ScriptedBackend):
    """Records the length of every text it tokenizes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokenized: list[int] = []

    def encode(self, prompt):
        if isinstance(prompt, str):
            self.tokenized.append(len(prompt))
        return super().encode(prompt)


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a" * 600_000}], "max_tokens": 4}),
    ("/v1/completions", {"prompt": "a" * 600_000, "max_tokens": 4}),
    ("/v1/messages/count_tokens", {"messages": [{"role": "user", "content": "a" * 600_000}]}),
])
def test_a_prompt_too_long_for_the_context_is_refused_untokenized(real_tokenizer, path, body):
    backend = Spy(real_tokenizer, max_model_len=4096)  # 4096 tokens of at most 128 bytes: 524,288 characters

    async def post():
        async with client_for(backend) as http:
            return await http.post(path, json=body)

    r = asyncio.run(post())
    assert r.status_code == 400 and backend.tokenized == []
    message = r.json()["error"]["message"]
    assert "4096 tokens" in message and "524288 characters" in message
    if not path.startswith("/v1/messages"):
        assert r.json()["error"]["code"] == "context_length_exceeded"


def test_a_long_prompt_under_the_bound_is_counted_only_until_it_is_over(real_tokenizer):
    backend = Spy(real_tokenizer, max_model_len=4096)
    words = " ".join(f"w{i}" for i in range(100_000))[:500_000]  # under 524,288 characters, ~200K tokens

    async def post():
        async with client_for(backend) as http:
            return await http.post("/v1/completions", json={"prompt": words, "max_tokens": 4})

    r = asyncio.run(post())
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert backend.tokenized == [CHUNK]  # one piece told it all, not the 500,000 characters


def test_the_bound_is_the_longest_token_and_only_for_tokenizers_that_keep_their_input(real_tokenizer):
    assert longest_token_bytes(real_tokenizer) == max(len(t) for t in real_tokenizer.get_vocab()) == 128
    shrinking = Tokenizer.from_str(real_tokenizer.to_str())
    shrinking.normalizer = normalizers.NFKC()  # may fold several characters into one
    assert longest_token_bytes(shrinking) is None
    backend = Spy(real_tokenizer, max_model_len=4096)
    backend.max_prompt_chars = None  # no bound: tokenized, then refused for its token count

    async def post():
        async with client_for(backend) as http:
            return await http.post("/v1/completions", json={"prompt": "a " * 5000, "max_tokens": 4})

    r = asyncio.run(post())
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert backend.tokenized == [10_000]


def plain_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping():
        return {"ok": True}

    @app.post("/echo")
    async def echo(request: Request):
        return {"bytes": len(await request.body())}

    return app


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def closed_by_server(s: socket.socket, wait: float) -> bool:
    """Whether the server closes `s` within `wait` seconds (it sends nothing before closing)."""
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_connection_that_never_finishes_its_head_is_closed():
    with serving(plain_app(), limits=ConnectionLimits(head_timeout=0.5)) as url:
        stalled = socket.create_connection(address(url))
        stalled.sendall(b"GET /ping HTTP/1.1\r\nHost: dsv4\r\n")  # no blank line: the head never ends
        trickling = socket.create_connection(address(url))
        for byte in b"GET /ping HTTP/1.1\r\nX-Slow: 1\r\n":  # a byte at a time: bytes do not buy time
            try:
                trickling.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        assert closed_by_server(stalled, 10) and closed_by_server(trickling, 10)
        # a keep-alive connection that answered a request and then stalls in its next head is closed too
        with socket.create_connection(address(url)) as s:
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: dsv4\r\n\r\n")
            reply = b""
            while not reply.endswith(b'{"ok":true}'):  # the whole response, so nothing is left to read after it
                reply += s.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200 ")
            s.sendall(b"GET /ping HTTP/1.1\r\n")
            assert closed_by_server(s, 10)
        stalled.close()
        trickling.close()


def test_a_body_that_trickles_in_is_cut_off():
    with serving(plain_app(), limits=ConnectionLimits(head_timeout=0.5)) as url:
        with socket.create_connection(address(url)) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: dsv4\r\nContent-Length: 1000\r\n\r\n0123456789")
            assert closed_by_server(s, 10)
        with socket.create_connection(address(url)) as s:  # a body that keeps up is read whole
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: dsv4\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000)
            reply = b""
            while b'{"bytes":100000}' not in reply and (chunk := s.recv(65536)):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200 ")


def test_a_newcomer_is_told_503_when_every_connection_is_serving_a_request():
    with serving(plain_app(), limits=ConnectionLimits(max_connections=2, head_timeout=30)) as url:
        busy = []
        for _ in range(2):  # requests whose bodies are still coming: serving, not waiting for a head
            s = socket.create_connection(address(url))
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: dsv4\r\nContent-Length: 10\r\n\r\n01234")
            busy.append(s)
        time.sleep(0.2)
        with socket.create_connection(address(url)) as s:
            s.settimeout(10)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 503 ") and b"connection limit" in reply
        for s in busy:
            s.sendall(b"56789")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
            s.close()


def test_half_open_connections_over_the_limit_displace_the_oldest_not_the_newcomer():
    with serving(plain_app(), limits=ConnectionLimits(max_connections=50, head_timeout=60)) as url:
        held = []
        for _ in range(300):
            s = socket.create_connection(address(url))
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: dsv4\r\n")
            held.append(s)
        r = httpx.get(f"{url}/ping", timeout=10)
        assert r.status_code == 200
        # the oldest were closed to make room; the newest are still open
        assert closed_by_server(held[0], 5) and not closed_by_server(held[-1], 0.2)
        for s in held:
            s.close()


def test_dsv4_serve_answers_while_half_open_connections_exhaust_its_descriptors():
    """`dsv4 serve` under a 256-descriptor limit, 400 connections that never finish a head: without a
    connection limit, accept() fails with EMFILE and the legitimate request is never accepted."""
    def limit_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    held = []
    with serve_process(["--engine-in-process", "--max-num-seqs", "2"], env={"OMP_NUM_THREADS": "1"},
                       preexec_fn=limit_descriptors) as (url, _):
        try:
            for _ in range(400):
                c = socket.create_connection(address(url))
                c.sendall(b"GET /v1/models HTTP/1.1\r\nHost: dsv4\r\n")
                held.append(c)
            r = httpx.get(f"{url}/v1/models", timeout=10)
            assert r.status_code == 200 and r.json()["data"]
        finally:
            for c in held:
                c.close()


def test_the_docs_need_the_key_when_one_is_set(real_tokenizer):
    async def get(path: str, **headers):
        async with client_for(ScriptedBackend(real_tokenizer), api_key="sekrit") as http:
            return (await http.get(path, headers=headers)).status_code

    for path in ("/docs", "/redoc", "/openapi.json", "/v1/models"):
        assert asyncio.run(get(path)) == 401
        assert asyncio.run(get(path, authorization="Bearer sekrit")) == 200
    assert asyncio.run(get("/health")) == 200 and asyncio.run(get("/metrics")) == 200


def test_the_key_comes_from_a_file_or_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DSV4_API_KEY", raising=False)
    keyfile = tmp_path / "key"
    keyfile.write_text("sekrit-from-file\n")
    parse = build_parser().parse_args
    assert api_key_of(parse(["serve", "--api-key-file", str(keyfile)])) == "sekrit-from-file"
    assert api_key_of(parse(["serve"])) is None
    monkeypatch.setenv("DSV4_API_KEY", "sekrit-from-env")
    assert api_key_of(parse(["serve"])) == "sekrit-from-env"
    assert api_key_of(parse(["serve", "--api-key-file", str(keyfile)])) == "sekrit-from-file"
    assert api_key_of(parse(["serve", "--api-key", "on-the-command-line"])) == "on-the-command-line"
    assert "ps" in capsys.readouterr().err  # the command line's key is warned about
    keyfile.write_text("\n")
    with pytest.raises(SystemExit, match="empty"):
        api_key_of(parse(["serve", "--api-key-file", str(keyfile)]))
    with pytest.raises(SystemExit, match="No such file"):
        api_key_of(parse(["serve", "--api-key-file", str(tmp_path / "missing")]))


def test_serve_states_the_server_defaults():
    """`dsv4 serve --help` names its defaults in words (importing the server there would load torch for every
    command): they must be the server's."""
    usage = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(usage):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(usage.getvalue().split())
    limits = ConnectionLimits()
    assert DEFAULT_MAX_REQUEST_BYTES == 16 * MIB and "(default: 16 MiB)" in text
    assert f"request head is closed (default: {limits.max_connections}, lowered" in text
    assert f"its request head (default: {limits.head_timeout:g})" in text
    assert f"connection is kept (default: {limits.keep_alive_timeout:g})" in text
