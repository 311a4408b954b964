"""A TCP proxy in front of the embedded broker that can starve one client's fetches.

The broker advertises the proxy's address, so every client connects through it. While `hold` is
on, each Fetch (Kafka API key 1) from a client whose client id starts with the given prefix gets
an empty, well-formed Fetch response from the proxy (after FETCH_WAIT_S, as a broker's fetch wait
would) instead of reaching the broker. Every other request, on that connection too, still goes to
the broker (ListOffsets, metadata, the coordinator's heartbeats), and answers keep their order.
That is a partition that stops delivering records while the broker itself answers: a stuck
leader, a wedged fetch session, a broker reporting offsets it cannot serve.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from stream.kafka.broker import free_port

FETCH = 1
FETCH_WAIT_S = 0.5


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def request_info(frame: bytes) -> tuple[int, int, int, str]:
    """(api key, api version, correlation id, client id) of a request frame (no length prefix)."""
    api_key, version, correlation = struct.unpack(">hhi", frame[0:8])
    (id_len,) = struct.unpack(">h", frame[8:10])
    client_id = frame[10 : 10 + id_len].decode(errors="replace") if id_len > 0 else ""
    return api_key, version, correlation, client_id


def empty_fetch_response(version: int, correlation: int) -> bytes:
    """A Fetch response (v0-v11, the non-flexible ones) with no topics, length-prefixed."""
    if version > 11:
        raise ValueError(f"Fetch v{version} is not supported by this proxy")
    body = struct.pack(">i", correlation)
    if version >= 1:
        body += struct.pack(">i", 0)  # throttle_time_ms
    if version >= 7:
        body += struct.pack(">hi", 0, 0)  # error_code, session_id
    body += struct.pack(">i", 0)  # responses: an empty array
    return struct.pack(">i", len(body)) + body


class _Link:
    """One client connection and its upstream twin, with the requests awaiting an answer."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.lock = threading.Lock()
        self.outstanding = 0
        self.drained = threading.Event()
        self.drained.set()


class FetchHoldingProxy:
    """Forward 127.0.0.1:`port` to `upstream`; `hold(prefix)` stalls that client's fetches."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.upstream = (host, upstream_port)
        self.starved = 0  # Fetch requests answered empty so far
        self._prefix: str | None = None
        self._server = socket.create_server((host, self.port))
        self._sockets: list[socket.socket] = [self._server]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def hold(self, client_prefix: str) -> None:
        """From now on, starve the fetches of clients whose id starts with `client_prefix`."""
        self._prefix = client_prefix

    def release(self) -> None:
        """Forward fetches again."""
        self._prefix = None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            link = _Link(client, upstream)
            threading.Thread(target=self._requests, args=(link,), daemon=True).start()
            threading.Thread(target=self._responses, args=(link,), daemon=True).start()

    def _requests(self, link: _Link) -> None:
        with contextlib.suppress(OSError, ValueError):
            while True:
                size = _read_exact(link.client, 4)
                if size is None:
                    break
                frame = _read_exact(link.client, struct.unpack(">i", size)[0])
                if frame is None:
                    break
                api_key, version, correlation, client_id = request_info(frame)
                prefix = self._prefix
                if api_key == FETCH and prefix is not None and client_id.startswith(prefix):
                    link.drained.wait()  # earlier answers first: a connection's answers keep order
                    time.sleep(FETCH_WAIT_S)
                    with link.lock:
                        link.client.sendall(empty_fetch_response(version, correlation))
                    self.starved += 1
                    continue
                with link.lock:
                    link.outstanding += 1
                    link.drained.clear()
                link.upstream.sendall(size + frame)
        self._close(link.client, link.upstream)

    def _responses(self, link: _Link) -> None:
        with contextlib.suppress(OSError):
            while True:
                size = _read_exact(link.upstream, 4)
                if size is None:
                    break
                frame = _read_exact(link.upstream, struct.unpack(">i", size)[0])
                if frame is None:
                    break
                with link.lock:
                    link.client.sendall(size + frame)
                    link.outstanding -= 1
                    if link.outstanding <= 0:
                        link.drained.set()
        self._close(link.client, link.upstream)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._closed = True
        self._close(*self._sockets)
