"""A small real TCP forwarding proxy for fault tests: one HTTP/1.1 request per connection.

Each request is read whole from the client, then `decide(method, path)` (or, for a proxy made
`with_body`, `decide(method, path, body)`) says what happens:
`forward` (send it on, return the answer), `reset` (answer nothing: the client's connection is
reset with an RST, the server never sees the request) or `drop` (the server gets the request and
answers it, then the client's connection is closed without the answer: a reply lost after the
server applied the write). When the server cannot be reached, the client's connection is reset.
Standard library and threads only.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

FORWARD, RESET, DROP, REFUSED = "forward", "reset", "drop", "refused"


class FaultProxy:
    """Listen on 127.0.0.1 (a free port) and forward to `target_port` on 127.0.0.1."""

    def __init__(self, target_port: int, decide: Callable[..., str] | None = None,
                 with_body: bool = False):
        self.target_port = target_port
        self.decide = decide or (lambda method, path: FORWARD)
        self.with_body = with_body
        self.seen: list[tuple[str, str, str]] = []  # (method, path, action), in order
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def actions(self, action: str, path_part: str = "") -> int:
        """How many requests (whose path holds `path_part`) met `action`."""
        return sum(1 for _, path, done in self.seen if done == action and path_part in path)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            request = _read_request(client)
            if request is None:
                client.close()
                return
            method, path, data, body = request
            with self._lock:  # decisions in arrival order (decide may count)
                action = (self.decide(method, path, body) if self.with_body
                          else self.decide(method, path))
                index = len(self.seen)
                self.seen.append((method, path, action))
            if action == RESET:
                _reset(client)
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=60)
            except OSError:
                with self._lock:
                    self.seen[index] = (method, path, REFUSED)
                _reset(client)
                return
            with upstream:
                upstream.sendall(data)
                answer = _read_to_end(upstream)
            if action == DROP or not answer:
                client.close()
                return
            client.sendall(_with_connection_close(answer))
            client.close()
        except OSError:
            client.close()


def _read_request(sock: socket.socket) -> tuple[str, str, bytes, bytes] | None:
    """(method, path, the request rewritten with `Connection: close`, its body) or None at
    EOF."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, path, _ = lines[0].decode("latin-1").split(" ", 2)
    headers = [line for line in lines[1:]
               if not line.lower().startswith((b"connection:", b"keep-alive:"))]
    length = 0
    for line in headers:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"transfer-encoding":
            msg = "chunked request bodies are not supported by this proxy"
            raise ValueError(msg)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    data = b"\r\n".join([lines[0], *headers, b"Connection: close"]) + b"\r\n\r\n" + body
    return method, path, data, body


def _read_to_end(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


def _with_connection_close(answer: bytes) -> bytes:
    """The answer with `Connection: close`, so the client never reuses this connection."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n")
             if not line.lower().startswith((b"connection:", b"keep-alive:"))]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the peer sees `connection reset by peer`."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
