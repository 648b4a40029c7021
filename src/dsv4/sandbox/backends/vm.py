"""The `vm` backend: QEMU booting a kernel and an initramfs whose init starts the guest agent.

KVM is used when `/dev/kvm` works, TCG otherwise. The guest gets no network device at all.
"""

import glob
import os
import shutil

from dsv4.sandbox.config import SandboxSpec, VMConfig
from dsv4.sandbox.errors import BackendUnavailable


def find_kernel(cfg: VMConfig) -> str:
    if cfg.kernel is not None:
        if not os.path.isfile(cfg.kernel):
            raise BackendUnavailable(f"kernel={str(cfg.kernel)!r} does not exist")
        return str(cfg.kernel)
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise BackendUnavailable("no kernel: /boot has no vmlinuz-* (Debian package linux-image-amd64)")
    return kernels[-1]


def check_tools() -> str:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise BackendUnavailable("QEMU is not installed (Debian package qemu-system-x86)")
    return qemu


class VMBackend:
    def __init__(self, spec: SandboxSpec):
        cfg = spec.backend
        assert isinstance(cfg, VMConfig)
        check_tools()
        find_kernel(cfg)
        raise BackendUnavailable("the vm backend's guest image builder is not implemented yet")
