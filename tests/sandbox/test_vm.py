"""The `vm` backend: one QEMU guest (KVM where usable, else TCG) booted for the whole module."""

import pytest

from dsv4.sandbox import BackendUnavailable, Sandbox, VMConfig
from dsv4.sandbox.backends.vm import accelerators, kvm_groups


@pytest.fixture(scope="module")
def vm():
    try:
        sb = Sandbox.create("vm", memory_limit_mb=512)
    except BackendUnavailable as e:
        pytest.skip(f"backend 'vm' unavailable: {e}")
    yield sb
    sb.close()


def test_guest_runs_its_own_kernel_with_a_session(vm):
    r = vm.run_shell("uname -r; hostname; cd /tmp && export STAGE=vm", timeout=30)
    assert r.exit_code == 0 and r.stdout.endswith("sandbox\n")
    assert vm.run_shell("pwd; echo $STAGE", timeout=30).stdout == "/tmp\nvm\n"
    vm.run_shell("cd /workspace", timeout=30)


def test_files_and_snapshots_go_through_the_agent(vm):
    vm.write_file("/workspace/data.bin", bytes(range(256)))
    assert vm.read_file("/workspace/data.bin") == bytes(range(256))
    assert vm.run_shell("wc -c < /workspace/data.bin", timeout=30).stdout.strip() == "256"
    snap = vm.snapshot()
    assert snap.layers and snap.layers[-1].tar


def test_no_network_device_and_limits(vm):
    r = vm.run_shell("ls /sys/class/net", timeout=30)
    assert r.stdout == "lo\n"
    r = vm.run_shell("while :; do :; done", timeout=2)
    assert r.timed_out and r.exit_code == -9
    r = vm.run_shell("yes | head -c 100000", timeout=30, max_output_bytes=100)
    assert r.stdout_truncated and len(r.stdout) == 100


def test_close_stops_qemu(vm):  # runs last in this module: it ends the shared guest
    proc = vm.backend.proc
    assert proc.poll() is None
    vm.close()
    assert proc.poll() is not None and not vm.backend.is_alive()


def test_accelerator_choice():
    assert accelerators(VMConfig(accel="tcg"), 0) == ["tcg"]
    assert accelerators(VMConfig(), 0)[-1] == "tcg"
    assert (kvm_groups(0) == []) is __import__("os").path.exists("/dev/kvm")
