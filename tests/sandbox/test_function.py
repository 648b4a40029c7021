"""The `function` backend: a warm worker pool with timeouts and memory limits."""

import os
import time

import pytest

from dsv4.sandbox import UnsupportedOperation
from dsv4.sandbox.errors import FunctionNotRegistered


def add(a, b):
    return a + b


def pid():
    return os.getpid()


def hang():
    while True:
        time.sleep(1)


def hog():
    return len(bytearray(1 << 30))


def boom():
    raise ValueError("bad input")


FUNCS = {"add": add, "pid": pid, "hang": hang, "hog": hog, "boom": boom, "exit": os._exit}


@pytest.fixture
def fn(make_sandbox):
    return make_sandbox("function", functions=FUNCS, memory_limit_mb=256)


def test_calls_run_in_warm_workers(fn):
    assert fn.call("add", 2, b=3).value == 5
    pids = {fn.call("pid").value for _ in range(6)}
    assert os.getpid() not in pids and pids <= set(fn.backend.pids())


def test_exceptions_come_back_as_results(fn):
    r = fn.call("boom")
    assert not r.ok and r.error.startswith("ValueError: bad input")


def test_timeout_kills_and_replaces_the_worker(fn):
    before = set(fn.backend.pids())
    r = fn.call("hang", timeout=0.5)
    assert r.timed_out and not r.ok
    assert len(set(fn.backend.pids()) - before) == 1
    assert fn.call("add", 1, 1).value == 2


def test_memory_limit_and_crashes(fn):
    r = fn.call("hog")
    assert not r.ok and r.error.startswith("MemoryError")
    r = fn.call("exit", 3)
    assert not r.ok and "exit code 3" in r.error
    assert fn.call("add", 1, 2).value == 3


def test_unknown_function_and_no_shell(fn):
    with pytest.raises(FunctionNotRegistered, match="'nope'"):
        fn.call("nope")
    with pytest.raises(UnsupportedOperation):
        fn.run_shell("true", timeout=5)


def test_close_kills_the_pool(make_sandbox):
    fn = make_sandbox("function", functions=FUNCS)
    pids = fn.backend.pids()
    fn.close()
    for p in pids:
        assert not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split()[2] in "ZX"


def test_calls_are_journaled_and_replayed(make_sandbox, tmp_path):
    from dsv4.sandbox import Sandbox

    journal = tmp_path / "fn.jsonl"
    fn = make_sandbox("function", functions=FUNCS, journal=journal)
    first = [fn.call("pid"), fn.call("add", 1, 2)]
    fn.close()
    with Sandbox.resume(journal, functions=FUNCS) as again:
        assert [again.call("pid"), again.call("add", 1, 2)] == first  # same pid: answered from the journal
        live = again.call("pid")
        assert live.value != first[0].value and live.value in again.backend.pids()


def test_memory_limit_is_growth_over_a_large_owner(make_sandbox):
    import mmap

    ballast = mmap.mmap(-1, 4 << 30)  # 4 GiB of untouched address space in the owning process
    try:
        fn = make_sandbox("function", functions=FUNCS, memory_limit_mb=256)
        assert fn.call("add", 2, 2).value == 4
        assert fn.call("hog").error.startswith("MemoryError")
    finally:
        ballast.close()
