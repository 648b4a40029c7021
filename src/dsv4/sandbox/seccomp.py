"""A classic-BPF seccomp filter for x86_64, handed to bubblewrap with `--seccomp FD`.

Denied calls fail with EPERM (clone3 with ENOSYS so libc falls back to clone, whose flags we can inspect);
other architectures' syscall ABIs are killed outright. With `deny_inet`, IP and packet sockets fail with
EACCES, which is how `network_rules="none"` fails fast.
"""

import errno
import platform
import struct

from dsv4.sandbox.errors import BackendUnavailable

AUDIT_ARCH_X86_64 = 0xC000003E
X32_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000
TIOCSTI = 0x5412
AF_DENIED = (2, 10, 17)  # AF_INET, AF_INET6, AF_PACKET

# x86_64 numbers: kernel, mount and namespace control, tracing, keyrings, clocks, affinity, io_uring.
DENIED = {
    "ptrace": 101, "syslog": 103, "vhangup": 153, "pivot_root": 155, "adjtimex": 159,
    "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "sched_setaffinity": 203,
    "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249,
    "keyctl": 250, "unshare": 272, "perf_event_open": 298, "fanotify_init": 300,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
NR_CLONE, NR_CLONE3, NR_IOCTL, NR_SOCKET = 56, 435, 16, 41

LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
OFF_NR, OFF_ARCH, OFF_ARG0, OFF_ARG1 = 0, 4, 16, 24


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _deny(nr: int, err: int) -> list[bytes]:
    return [_ins(JEQ, nr, 0, 1), _ins(RET, RET_ERRNO | err)]


def _arg_block(nr: int, arg_off: int, tests: list[bytes]) -> list[bytes]:
    """If the syscall is `nr`, load one argument and decide on it (each test jumps to EPERM when it hits)."""
    body = [_ins(LD_W_ABS, arg_off), *tests, _ins(RET, RET_ALLOW)]
    return [_ins(JEQ, nr, 0, len(body)), *body]


def build_filter(*, deny_inet: bool) -> bytes:
    """The filter program as raw `struct sock_filter` records."""
    if platform.machine() != "x86_64":
        raise BackendUnavailable(f"the seccomp filter is written for x86_64, not {platform.machine()}")
    eperm = _ins(RET, RET_ERRNO | errno.EPERM)
    prog = [_ins(LD_W_ABS, OFF_ARCH), _ins(JEQ, AUDIT_ARCH_X86_64, 1, 0), _ins(RET, RET_KILL_PROCESS),
            _ins(LD_W_ABS, OFF_NR), _ins(JGE, X32_BIT, 0, 1), eperm]
    for nr in DENIED.values():
        prog += _deny(nr, errno.EPERM)
    prog += _deny(NR_CLONE3, errno.ENOSYS)
    prog += _arg_block(NR_CLONE, OFF_ARG0, [_ins(JSET, CLONE_NEWUSER, 0, 1), eperm])
    prog += _arg_block(NR_IOCTL, OFF_ARG1, [_ins(JEQ, TIOCSTI, 0, 1), eperm])
    if deny_inet:
        eacces = _ins(RET, RET_ERRNO | errno.EACCES)
        tests = [t for af in AF_DENIED for t in (_ins(JEQ, af, 0, 1), eacces)]
        prog += _arg_block(NR_SOCKET, OFF_ARG0, tests)
    prog.append(_ins(RET, RET_ALLOW))
    return b"".join(prog)
