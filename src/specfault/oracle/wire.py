"""Length-prefixed JSON messages over a Unix socket (host coordinator <-> workers)."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any


class WorkerGone(EOFError):
    """The peer closed its end (for a worker: it exited, and its mm is gone)."""


def send(sock: socket.socket, msg: Any, fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    payload = struct.pack("<I", len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], fds)
    else:
        sock.sendall(payload)


def recv(sock: socket.socket, want_fds: int = 0) -> tuple[Any, list[int]]:
    """One message, and the file descriptors that came with it."""
    fds: list[int] = []
    if want_fds:
        head, fds, _flags, _addr = socket.recv_fds(sock, 4, want_fds)
    else:
        head = sock.recv(4)
    head = head + _exact(sock, 4 - len(head)) if head else head
    if len(head) < 4:
        raise WorkerGone("peer closed")
    (n,) = struct.unpack("<I", head)
    return json.loads(_exact(sock, n)), fds


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise WorkerGone("peer closed mid-message")
        buf += chunk
    return buf
