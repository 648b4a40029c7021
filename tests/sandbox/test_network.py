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
        assert r.stdout.splitlines() == ["pong", "ConnectionRefusedError", "OSError"]
        assert r.duration_s < 5  # denied destinations fail fast
        assert (loopback_server.accepted, other.accepted) == (1, 0)
    finally:
        other.close()


def test_rules_parsing_and_validation():
    assert NetworkRules.of(None).mode == "none"
    rules = NetworkRules.of(["localhost:80", "[::1]:443"])
    assert [(d.host, d.port) for d in rules.allow] == [("127.0.0.1", 80), ("::1", 443)]
    with pytest.raises(ValueError, match="only loopback"):
        NetworkRules.of(["10.0.0.1:80"])
    with pytest.raises(ValueError, match="mode='allow'"):
        NetworkRules(mode="loopback", allow=rules.allow)
