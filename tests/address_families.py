"""Run a command under systemd's ``RestrictAddressFamilies=`` without systemd: the same
mechanism, a seccomp filter under which ``socket()`` of any family not listed fails with
EAFNOSUPPORT (errno 97), installed with ``prctl`` and kept across ``exec``.

    python -m tests.address_families AF_UNIX AF_INET AF_INET6 -- CMD [ARG...]

x86-64 and aarch64 (a socket() of another architecture's ABI is let through).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
# machine: (AUDIT_ARCH_*, __NR_socket)
ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}
# struct seccomp_data: nr (int) at 0, arch (u32) at 4, args[0] (u64, low half first) at 16
NR, ARCH, ARG0 = 0, 4, 16
LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def program(allowed: list[int]) -> bytes:
    """socket(family, ...) with a family not in ``allowed``: EAFNOSUPPORT; all else runs."""
    arch, nr_socket = ARCHES[platform.machine()]
    n = len(allowed)
    # After the family checks: [n+5] deny, [n+6] allow. A jump counts from the next one.
    code = [
        _insn(LD_W_ABS, ARCH),
        _insn(JEQ_K, arch, 0, n + 4),  # another ABI: allow
        _insn(LD_W_ABS, NR),
        _insn(JEQ_K, nr_socket, 0, n + 2),  # not socket(): allow
        _insn(LD_W_ABS, ARG0),
        *(_insn(JEQ_K, family, n - i, 0) for i, family in enumerate(allowed)),
        _insn(RET_K, SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT),
        _insn(RET_K, SECCOMP_RET_ALLOW),
    ]
    return b"".join(code)


def restrict(families: list[str]) -> None:
    """Install the filter on this process (and whatever it executes or forks)."""
    filt = program([int(getattr(socket, name)) for name in families])
    buf = ctypes.create_string_buffer(filt)

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(filt) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str]) -> None:
    split = argv.index("--")
    restrict(argv[:split])
    command = argv[split + 1 :]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
