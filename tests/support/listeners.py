"""What a set of processes listens on, read where ``ss -ltnp`` reads it: ``/proc/net/tcp{,6}`` and each
process's socket descriptors."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable
from pathlib import Path

LISTEN = "0A"  # the TCP state column of /proc/net/tcp


def listeners(pids: Iterable[int]) -> set[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    owners = {}  # socket inode -> pid
    for pid in pids:
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except (FileNotFoundError, PermissionError):  # gone meanwhile
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[int(target[len("socket:["):-1])] = pid
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == LISTEN and inode in owners:
                address, port = local.split(":")
                found.add((owners[inode], _address(address), int(port, 16)))
    return found


def _address(hex_words: str) -> str:
    """The kernel prints the address as 32-bit words, each in the host's byte order."""
    raw = bytes.fromhex(hex_words)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback
