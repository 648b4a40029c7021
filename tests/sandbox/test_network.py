"""network_rules: none (default, see test_escape), a private loopback, and an allow-list of host:port."""

import pytest

from dsv4.sandbox import NetworkRules

from .conftest import LoopbackServer

CONNECT = (
    "python3 -c 'import socket, sys\n"
    "try:\n"
    "    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
    "    print(s.recv(10).decode())\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)' "
)


def test_loopback_is_private_to_the_sandbox(make_sandbox, loopback_server):
    sb = make_sandbox(network_rules="loopback")
    sb.run_shell("python3 -c 'import socket\ns=socket.socket(); s.bind((\"127.0.0.1\", 8765)); s.listen()\n"
                 "while True: c, _ = s.accept(); c.sendall(b\"inside\"); c.close()' &", timeout=10)
    r = sb.run_shell(f"sleep 0.3; {CONNECT} 127.0.0.1 8765; {CONNECT} 127.0.0.1 {loopback_server.port}",
                     timeout=10)
    assert r.stdout == "inside\nConnectionRefusedError\n"
    assert loopback_server.accepted == 0


def test_allow_list_reaches_only_the_listed_destinations(make_sandbox, loopback_server):
    other = LoopbackServer()
    try:
        sb = make_sandbox(network_rules=[f"127.0.0.1:{loopback_server.port}"])
        r = sb.run_shell(f"{CONNECT} 127.0.0.1 {loopback_server.port}; {CONNECT} 127.0.0.1 {other.port}; "
                         f"{CONNECT} 10.1.2.3 80", timeout=20)
        # Refused and unreachable at once (a hang would end in TimeoutError after the 5 s connect timeout).
        assert r.stdout.splitlines() == ["pong", "ConnectionRefusedError", "OSError"]
        assert (loopback_server.accepted, other.accepted) == (1, 0)
    finally:
        other.close()


PROXY_CONNECT = (
    "python3 -c 'import socket, sys\n"
    "s = socket.create_connection((\"127.0.0.1\", 3128), timeout=5)\n"
    "s.sendall(b\"CONNECT %s HTTP/1.1\\r\\n\\r\\n\" % sys.argv[1].encode())\n"
    "data = b\"\"\n"
    "while chunk := s.recv(100): data += chunk\n"
    "head, _, body = data.decode().partition(\"\\r\\n\\r\\n\")\n"
    "print(head.splitlines()[0]); print(body)' "
)


def test_named_destinations_go_through_the_filtering_proxy(make_sandbox, loopback_server):
    other = LoopbackServer()
    try:
        sb = make_sandbox(network_rules=[f"localhost:{loopback_server.port}",
                                         f"localhost:{other.port + 1}"])
        r = sb.run_shell(f"echo $HTTPS_PROXY; {PROXY_CONNECT} localhost:{loopback_server.port}; "
                         f"{PROXY_CONNECT} localhost:{other.port}", timeout=20)
        assert r.stdout.splitlines() == ["http://127.0.0.1:3128", "HTTP/1.1 200 Connection established",
                                         "pong", "HTTP/1.1 403 Forbidden", ""]
        assert (loopback_server.accepted, other.accepted) == (1, 0)
    finally:
        other.close()


def test_rules_parsing_and_validation():
    assert NetworkRules.of(None).mode == "none"
    rules = NetworkRules.of(["127.0.0.1:80", "[::1]:443", "PyPI.org:443", "10.0.0.1:80", "localhost:8080"])
    assert [(d.host, d.port, d.transparent) for d in rules.allow] == [
        ("127.0.0.1", 80, True), ("::1", 443, True), ("pypi.org", 443, False), ("10.0.0.1", 80, False),
        ("localhost", 8080, False)]
    with pytest.raises(ValueError, match="neither an IP address nor a host name"):
        NetworkRules.of(["bad host:80"])
    with pytest.raises(ValueError, match="mode='allow'"):
        NetworkRules(mode="loopback", allow=rules.allow)


def test_plain_http_requests_are_forwarded_in_origin_form(make_sandbox):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"path={self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        sb = make_sandbox(network_rules=[f"localhost:{port}"])
        fetch = "python3 -c 'import urllib.request as u, sys; print(u.urlopen(sys.argv[1]).read().decode())'"
        r = sb.run_shell(f"{fetch} 'http://localhost:{port}/x?y=1'; "
                         f"{fetch} http://localhost:{port + 1}/ 2>&1 | tail -1", timeout=20)
        assert r.stdout.splitlines() == ["path=/x?y=1", "urllib.error.HTTPError: HTTP Error 403: Forbidden"]
    finally:
        server.shutdown()
        server.server_close()


def test_container_backend_gets_the_same_relay(make_sandbox, loopback_server, tmp_path):
    import shutil
    import tempfile
    from pathlib import Path

    from dsv4.sandbox import ContainerConfig

    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed (Debian package busybox-static)")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        root.chmod(0o755)
        (root / "bin").mkdir()
        shutil.copy(shutil.which("busybox"), root / "bin" / "busybox")
        for applet in ("sh", "nc", "env", "cat"):
            (root / "bin" / applet).symlink_to("busybox")
        sb = make_sandbox(ContainerConfig(image=root), network_rules=[f"127.0.0.1:{loopback_server.port}"])
        r = sb.run_shell(f"nc 127.0.0.1 {loopback_server.port} </dev/null", timeout=20)
        assert r.stdout == "pong" and loopback_server.accepted == 1


def test_rules_change_between_task_phases(make_sandbox, loopback_server):
    from dsv4.sandbox import UnsupportedOperation

    other = LoopbackServer()
    try:
        sb = make_sandbox(network_rules=[f"127.0.0.1:{loopback_server.port}"])
        probe = (f"{CONNECT} 127.0.0.1 {loopback_server.port}; {CONNECT} 127.0.0.1 {other.port}; "
                 "echo $HTTP_PROXY")
        assert sb.run_shell(probe, timeout=20).stdout.splitlines() == ["pong", "ConnectionRefusedError", ""]
        sb.set_network_rules([f"127.0.0.1:{other.port}", f"localhost:{loopback_server.port}"])
        assert sb.run_shell(probe, timeout=20).stdout.splitlines() == [
            "ConnectionRefusedError", "pong", "http://127.0.0.1:3128"]
        assert sb.run_shell(f"{PROXY_CONNECT} localhost:{loopback_server.port}", timeout=20).stdout == (
            "HTTP/1.1 200 Connection established\npong\n")
        sb.set_network_rules("loopback")
        assert sb.run_shell(probe, timeout=20).stdout.splitlines() == [
            "ConnectionRefusedError", "ConnectionRefusedError", ""]
        assert (loopback_server.accepted, other.accepted) == (2, 1)
    finally:
        other.close()
    with pytest.raises(UnsupportedOperation, match="seccomp"):
        make_sandbox().set_network_rules("loopback")
