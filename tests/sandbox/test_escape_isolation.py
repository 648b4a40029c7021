"""Attacks on the isolation layer (issue #16), one test each, on every backend that runs here.

Each attack worked on the sandbox before its fix: the host environment read from /proc/1/environ, the host disk
filled through the workspace, syscalls a denylist did not name, one host uid for every sandbox, QEMU without
its own seccomp sandbox, the allow-list proxy following a name to a loopback or metadata address.
"""

import socket

import pytest

from dsv4.cli import main
from dsv4.sandbox import ContainerConfig
from dsv4.server import create_app
from dsv4.server.background import serving
from tests.encoding.test_parse_strategies import render_calls
from tests.server.conftest import ScriptedBackend, real_tokenizer  # noqa: F401 - fixture

from .test_container import busybox_rootfs  # noqa: F401 - the shared image fixture
from .test_network import PROXY_CONNECT

SECRET = "dsv4-escape-host-secret-7f3a"
# A VM boots in about 2 minutes under TCG (this machine's KVM does not start a guest): slow, out of `make test`.
BACKENDS = ["process", "container", "runsc", pytest.param("vm", marks=pytest.mark.slow)]


@pytest.fixture
def box(request, make_sandbox, busybox_rootfs):  # noqa: F811
    """`make(**kwargs)`: a sandbox of the parametrized backend (skipped with the reason where unavailable)."""

    def make(**kwargs):
        name = request.param
        if name in ("container", "runsc"):
            runtime = "runsc" if name == "runsc" else "bwrap"
            return make_sandbox(ContainerConfig(image=busybox_rootfs, runtime=runtime), **kwargs)
        return make_sandbox(name, **kwargs)

    make.name = request.param
    return make


def every_backend(test):
    return pytest.mark.parametrize("box", BACKENDS, indirect=True)(test)


@every_backend
def test_host_environment_is_not_readable(box, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    sb = box()
    r = sb.run_shell("for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; echo done", timeout=60)
    assert r.stdout.endswith("done\n")
    assert SECRET not in r.stdout and "OPENAI_API_KEY" not in r.stdout


# ---- network: the allow-list proxy follows names only to public addresses ----------------------------------

@pytest.fixture
def resolver(monkeypatch):
    """Host names made to resolve (for the proxy, which runs in this process) to chosen addresses."""
    names: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return real(names[host], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def test_allowed_name_that_resolves_to_loopback_is_refused(make_sandbox, loopback_server, resolver):
    resolver["rebind.example"] = "127.0.0.1"  # an allowed name whose DNS answer points at the host itself
    sb = make_sandbox(network_rules=[f"rebind.example:{loopback_server.port}"])
    r = sb.run_shell(f"{PROXY_CONNECT} rebind.example:{loopback_server.port}", timeout=20)
    assert r.stdout.splitlines()[0] == "HTTP/1.1 403 Forbidden"
    assert loopback_server.accepted == 0


def test_loopback_allowed_by_ip_or_by_localhost_still_works(make_sandbox, loopback_server):
    sb = make_sandbox(network_rules=f"localhost:{loopback_server.port},127.0.0.1:{loopback_server.port}")
    r = sb.run_shell(f"{PROXY_CONNECT} localhost:{loopback_server.port}", timeout=20)
    assert r.stdout == "HTTP/1.1 200 Connection established\npong\n" and loopback_server.accepted == 1


def test_names_are_vetted_to_public_addresses(resolver):
    from dsv4.sandbox.network import vetted_addresses

    for name, address in [("metadata.example", "169.254.169.254"), ("alibaba-metadata.example", "100.100.100.200"),
                          ("v6-metadata.example", "fd00:ec2::254"), ("link.example", "fe80::1"),
                          ("private.example", "10.0.0.7"), ("zero.example", "0.0.0.0"),
                          ("mapped.example", "::ffff:127.0.0.1"), ("public.example", "8.8.8.8")]:
        resolver[name] = address
    for name in ["metadata.example", "alibaba-metadata.example", "v6-metadata.example", "link.example",
                 "private.example", "zero.example", "mapped.example"]:
        assert vetted_addresses(name, 80, listed=True) == [], name
    assert [a[1][0] for a in vetted_addresses("public.example", 80, listed=True)] == ["8.8.8.8"]
    # an IP literal is reached as given only when the user listed it; `all` mode never reaches a private one
    assert vetted_addresses("169.254.169.254", 80, listed=True) == [(socket.AF_INET, ("169.254.169.254", 80))]
    assert vetted_addresses("169.254.169.254", 80, listed=False) == []
    assert vetted_addresses("localhost", 80, listed=False) == []


def test_network_all_reaches_no_host_address(make_sandbox, loopback_server, resolver):
    resolver["rebind.example"] = "127.0.0.1"
    sb = make_sandbox(network_rules="all")
    r = sb.run_shell(f"echo $HTTPS_PROXY; for d in localhost 127.0.0.1 rebind.example; do "
                     f"{PROXY_CONNECT} $d:{loopback_server.port} | head -1; done", timeout=30)
    assert r.stdout.splitlines() == ["http://127.0.0.1:3128"] + ["HTTP/1.1 403 Forbidden"] * 3
    assert loopback_server.accepted == 0


# ---- `dsv4 agent --network`: the forms its --help documents ------------------------------------------------

@pytest.mark.parametrize("network", ["all", "127.0.0.1:8999,pypi.org:443"])
def test_agent_command_takes_the_documented_network_forms(network, real_tokenizer, make_sandbox, tmp_path,  # noqa: F811
                                                          capsys):
    make_sandbox("process")  # skips where bubblewrap cannot run at all
    scripts = ["</think>" + render_calls([("bash", {"command": "echo proxy=$HTTPS_PROXY"})]), "</think>done."]
    with serving(create_app(ScriptedBackend(real_tokenizer, scripts))) as url:
        rc = main(["agent", "Show the proxy.", "--endpoint", f"{url}/v1", "--network", network,
                   "--trajectory", str(tmp_path / "t.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "proxy=http://127.0.0.1:3128" in captured.out
