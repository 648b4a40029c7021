"""A classic-BPF seccomp allow-list for x86_64, handed to bubblewrap with `--seccomp FD`.

Only the system calls named in ALLOWED run; any other (including every call newer kernels add) fails with
ENOSYS, which libc and runtimes take as "not implemented here" and fall back from. The calls in DENIED, which
reach past the sandbox (tracing other processes or taking their file descriptors, mounts and namespaces,
kernel modules, keyrings, clocks, io_uring, BPF, modify_ldt), fail with EPERM instead, so a refusal is told
from an old kernel. Three calls are decided on an argument: clone (no new user namespace), ioctl (no TIOCSTI /
TIOCLINUX, which type into another terminal) and socket (AF_UNIX, plus AF_INET / AF_INET6 unless `deny_inet`;
AF_NETLINK, AF_VSOCK, AF_PACKET and every other family fail with EAFNOSUPPORT). clone3 fails with ENOSYS so
libc falls back to clone, whose flags can be inspected. Other architectures' syscall ABIs (x32, i386) are
refused or killed outright.
"""

import errno
import platform
import struct

from dsv4.sandbox.errors import BackendUnavailable

AUDIT_ARCH_X86_64 = 0xC000003E
X32_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl): what ordinary programs (shells, coreutils, Python,
# git, compilers, package builds) use on their own process, its children, files and sockets.
ALLOWED = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6, "poll": 7, "lseek": 8,
    "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13, "rt_sigprocmask": 14,
    "rt_sigreturn": 15, "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "pipe": 22,
    "select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27, "madvise": 28, "shmget": 29,
    "shmat": 30, "shmctl": 31, "dup": 32, "dup2": 33, "pause": 34, "nanosleep": 35, "getitimer": 36, "alarm":
    37, "setitimer": 38, "getpid": 39, "sendfile": 40, "connect": 42, "accept": 43, "sendto": 44, "recvfrom":
    45, "sendmsg": 46, "recvmsg": 47, "shutdown": 48, "bind": 49, "listen": 50, "getsockname": 51,
    "getpeername": 52, "socketpair": 53, "setsockopt": 54, "getsockopt": 55, "fork": 57, "vfork": 58, "execve":
    59, "exit": 60, "wait4": 61, "kill": 62, "uname": 63, "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67,
    "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "fcntl": 72, "flock": 73, "fsync": 74, "fdatasync":
    75, "truncate": 76, "ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81, "rename": 82,
    "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86, "unlink": 87, "symlink": 88, "readlink": 89, "chmod": 90,
    "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94, "umask": 95, "gettimeofday": 96, "getrlimit": 97,
    "getrusage": 98, "sysinfo": 99, "times": 100, "getuid": 102, "getgid": 104, "setuid": 105, "setgid": 106,
    "geteuid": 107, "getegid": 108, "setpgid": 109, "getppid": 110, "getpgrp": 111, "setsid": 112, "setreuid":
    113, "setregid": 114, "getgroups": 115, "setgroups": 116, "setresuid": 117, "getresuid": 118, "setresgid":
    119, "getresgid": 120, "getpgid": 121, "setfsuid": 122, "setfsgid": 123, "getsid": 124, "capget": 125,
    "capset": 126, "rt_sigpending": 127, "rt_sigtimedwait": 128, "rt_sigqueueinfo": 129, "rt_sigsuspend": 130,
    "sigaltstack": 131, "utime": 132, "mknod": 133, "personality": 135, "statfs": 137, "fstatfs": 138,
    "getpriority": 140, "setpriority": 141, "sched_setparam": 142, "sched_getparam": 143, "sched_setscheduler":
    144, "sched_getscheduler": 145, "sched_get_priority_max": 146, "sched_get_priority_min": 147,
    "sched_rr_get_interval": 148, "mlock": 149, "munlock": 150, "mlockall": 151, "munlockall": 152, "prctl":
    157, "arch_prctl": 158, "setrlimit": 160, "sync": 162, "gettid": 186, "readahead": 187, "setxattr": 188,
    "lsetxattr": 189, "fsetxattr": 190, "getxattr": 191, "lgetxattr": 192, "fgetxattr": 193, "listxattr": 194,
    "llistxattr": 195, "flistxattr": 196, "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "tkill":
    200, "time": 201, "futex": 202, "sched_getaffinity": 204, "set_thread_area": 205, "io_setup": 206,
    "io_destroy": 207, "io_getevents": 208, "io_submit": 209, "io_cancel": 210, "get_thread_area": 211,
    "epoll_create": 213, "remap_file_pages": 216, "getdents64": 217, "set_tid_address": 218, "restart_syscall":
    219, "semtimedop": 220, "fadvise64": 221, "timer_create": 222, "timer_settime": 223, "timer_gettime": 224,
    "timer_getoverrun": 225, "timer_delete": 226, "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep":
    230, "exit_group": 231, "epoll_wait": 232, "epoll_ctl": 233, "tgkill": 234, "utimes": 235, "mbind": 237,
    "set_mempolicy": 238, "get_mempolicy": 239, "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242,
    "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245, "waitid": 247, "ioprio_set": 251,
    "ioprio_get": 252, "inotify_init": 253, "inotify_add_watch": 254, "inotify_rm_watch": 255, "openat": 257,
    "mkdirat": 258, "mknodat": 259, "fchownat": 260, "futimesat": 261, "newfstatat": 262, "unlinkat": 263,
    "renameat": 264, "linkat": 265, "symlinkat": 266, "readlinkat": 267, "fchmodat": 268, "faccessat": 269,
    "pselect6": 270, "ppoll": 271, "set_robust_list": 273, "get_robust_list": 274, "splice": 275, "tee": 276,
    "sync_file_range": 277, "vmsplice": 278, "utimensat": 280, "epoll_pwait": 281, "signalfd": 282,
    "timerfd_create": 283, "eventfd": 284, "fallocate": 285, "timerfd_settime": 286, "timerfd_gettime": 287,
    "accept4": 288, "signalfd4": 289, "eventfd2": 290, "epoll_create1": 291, "dup3": 292, "pipe2": 293,
    "inotify_init1": 294, "preadv": 295, "pwritev": 296, "rt_tgsigqueueinfo": 297, "recvmmsg": 299, "prlimit64":
    302, "syncfs": 306, "sendmmsg": 307, "getcpu": 309, "sched_setattr": 314, "sched_getattr": 315, "renameat2":
    316, "seccomp": 317, "getrandom": 318, "memfd_create": 319, "execveat": 322, "membarrier": 324, "mlock2":
    325, "copy_file_range": 326, "preadv2": 327, "pwritev2": 328, "pkey_mprotect": 329, "pkey_alloc": 330,
    "pkey_free": 331, "statx": 332, "io_pgetevents": 333, "rseq": 334, "pidfd_send_signal": 424, "close_range":
    436, "openat2": 437, "faccessat2": 439, "epoll_pwait2": 441, "landlock_create_ruleset": 444,
    "landlock_add_rule": 445, "landlock_restrict_self": 446, "futex_waitv": 449, "set_mempolicy_home_node": 450,
    "cachestat": 451, "fchmodat2": 452, "futex_wake": 454, "futex_wait": 455, "futex_requeue": 456, "mseal": 462
}
# Refused with EPERM (anything not in ALLOWED is refused too, with ENOSYS).
DENIED = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "vhangup": 153, "modify_ldt": 154, "pivot_root": 155,
    "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon":
    167, "swapoff": 168, "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "sched_setaffinity": 203, "lookup_dcookie": 212,
    "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "migrate_pages":
    256, "unshare": 272, "move_pages": 279, "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at":
    303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree":
    428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434,
    "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442, "quotactl_fd": 443, "memfd_secret": 447,
    "process_mrelease": 448
}
NR_CLONE, NR_IOCTL, NR_SOCKET = 56, 16, 41

LD_W_ABS, JEQ, JGT, JGE, JSET, RET = 0x20, 0x15, 0x25, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
OFF_NR, OFF_ARCH, OFF_ARG0, OFF_ARG1 = 0, 4, 16, 24


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    assert 0 <= jt < 256 and 0 <= jf < 256, "a BPF jump reaches at most 255 instructions"
    return struct.pack("<HBBI", code, jt, jf, k)


def _ret_errno(err: int) -> bytes:
    return _ins(RET, RET_ERRNO | err)


def _deny(nr: int, err: int) -> list[bytes]:
    return [_ins(JEQ, nr, 0, 1), _ret_errno(err)]


def _arg_block(nr: int, arg_off: int, tests: list[bytes], otherwise: bytes = _ins(RET, RET_ALLOW)) -> list[bytes]:
    """If the syscall is `nr`, load one argument and decide on it (each test returns when it hits)."""
    body = [_ins(LD_W_ABS, arg_off), *tests, otherwise]
    return [_ins(JEQ, nr, 0, len(body)), *body]


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted numbers as maximal runs [lo, hi]."""
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _allow_list(numbers: list[int], otherwise: list[bytes]) -> list[bytes]:
    """Allow the syscall number in the accumulator if it lies in one of the runs, else go on to `otherwise`.

    First in the program, so the common calls (read, write, mmap, futex: the lowest runs) pass in a few steps."""
    runs = _ranges(numbers)
    n = len(runs)
    prog = []
    for i, (lo, hi) in enumerate(runs):  # below lo: no later run holds it; above hi: try the next run
        prog += [_ins(JGE, lo, 0, 2 * (n - i)), _ins(JGT, hi, 0, 2 * (n - i) - 2)]
    return [*prog, _ins(RET, RET_ALLOW), *otherwise]


def build_filter(*, deny_inet: bool) -> bytes:
    """The filter program as raw `struct sock_filter` records."""
    if platform.machine() != "x86_64":
        raise BackendUnavailable(f"the seccomp filter is written for x86_64, not {platform.machine()}")
    eperm, allow = _ret_errno(errno.EPERM), _ins(RET, RET_ALLOW)
    refused = []  # what is not in ALLOWED: calls decided on an argument, then EPERM or ENOSYS
    refused += _arg_block(NR_CLONE, OFF_ARG0, [_ins(JSET, CLONE_NEWUSER, 0, 1), eperm])
    refused += _arg_block(NR_IOCTL, OFF_ARG1, [_ins(JEQ, TIOCSTI, 0, 1), eperm, _ins(JEQ, TIOCLINUX, 0, 1), eperm])
    families = [_ins(JEQ, AF_UNIX, 0, 1), allow]
    for af in (AF_INET, AF_INET6):
        families += [_ins(JEQ, af, 0, 1), _ret_errno(errno.EACCES) if deny_inet else allow]
    refused += _arg_block(NR_SOCKET, OFF_ARG0, families, otherwise=_ret_errno(errno.EAFNOSUPPORT))
    for nr in DENIED.values():
        refused += _deny(nr, errno.EPERM)
    refused += [_ret_errno(errno.ENOSYS)]  # clone3 included: libc falls back to clone
    prog = [_ins(LD_W_ABS, OFF_ARCH), _ins(JEQ, AUDIT_ARCH_X86_64, 1, 0), _ins(RET, RET_KILL_PROCESS),
            _ins(LD_W_ABS, OFF_NR), _ins(JGE, X32_BIT, 0, 1), eperm]
    prog += _allow_list(list(ALLOWED.values()), refused)
    return b"".join(prog)
