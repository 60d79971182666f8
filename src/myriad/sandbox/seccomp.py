"""A seccomp deny-list for container sandboxes, as a raw BPF program for ``bwrap --seccomp``.

No libseccomp needed: the filter is small enough to assemble here. It kills the
process on a foreign architecture (so 32-bit / x32 syscall numbers cannot sneak
past), answers EPERM to syscalls a sandboxed build or test never needs (kernel
keyrings, bpf, perf, module loading, kexec, mount APIs, ptrace, io_uring, clock
setting, ...) and blocks ``ioctl(TIOCSTI)`` (typing into a terminal). Everything
else is allowed: the namespaces and dropped capabilities are the main wall, this
only narrows the kernel surface behind it.

Only x86_64 is encoded; elsewhere ``program()`` returns ``None`` and the sandbox
runs without the filter (``ContainerSandbox.info`` says so).
"""

from __future__ import annotations

import errno
import platform
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000

# BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06

_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000

_TIOCSTI = 0x5412

# x86_64 syscall numbers
DENIED_X86_64: dict[str, int] = {
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "ustat": 136,
    "sysfs": 139,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "_sysctl": 156,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "get_kernel_syms": 177,
    "query_module": 178,
    "quotactl": 179,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "adjtimex": 159,
    "clock_adjtime": 305,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "migrate_pages": 256,
    "unshare": 272,
    "move_pages": 279,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
_IOCTL = 16


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(deny: dict[str, int] | None = None) -> bytes | None:
    """The BPF program (``struct sock_filter[]``) or ``None`` off x86_64."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    numbers = sorted(set((deny or DENIED_X86_64).values()))
    eperm = _RET_ERRNO | errno.EPERM
    out = [
        _insn(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _insn(_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        _insn(_JGE_K, 0, 1, _X32_BIT),
        _insn(_RET_K, 0, 0, eperm),
    ]
    for nr in numbers:
        out.append(_insn(_JEQ_K, 0, 1, nr))
        out.append(_insn(_RET_K, 0, 0, eperm))
    # ioctl(fd, TIOCSTI, ...): compare the low 32 bits of args[1] (offset 24 on little endian)
    out += [
        _insn(_JEQ_K, 0, 3, _IOCTL),
        _insn(_LD_W_ABS, 0, 0, 24),
        _insn(_JEQ_K, 0, 1, _TIOCSTI),
        _insn(_RET_K, 0, 0, eperm),
        _insn(_RET_K, 0, 0, _RET_ALLOW),
    ]
    return b"".join(out)


__all__ = ["DENIED_X86_64", "program"]
