"""A TCP proxy in front of the embedded broker that can hold one client's Fetch requests.

The broker advertises the proxy's address, so every client connects through it. While `hold` is
on, the first Fetch (Kafka API key 1) from a client whose client id starts with the given prefix
is not forwarded, and nothing after it on that connection either (Kafka answers a connection's
requests in order, so skipping just the Fetch would break the protocol). Other connections keep
working: the group coordinator's heartbeats, the producers, the other clients. That is a changelog
partition that stops delivering while the broker itself stays up, as a stuck leader or a wedged
fetch session would.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from stream.broker import free_port

FETCH = 1


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def request_info(frame: bytes) -> tuple[int, str]:
    """(api key, client id) of one request frame (without its length prefix)."""
    api_key = struct.unpack(">h", frame[0:2])[0]
    (id_len,) = struct.unpack(">h", frame[8:10])
    client_id = frame[10 : 10 + id_len].decode(errors="replace") if id_len > 0 else ""
    return api_key, client_id


class FetchHoldingProxy:
    """Forward 127.0.0.1:`port` to `upstream`; `hold(prefix)` stalls that client's fetches."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.upstream = (host, upstream_port)
        self.held = 0  # connections currently held
        self._prefix: str | None = None
        self._released = threading.Event()
        self._released.set()
        self._server = socket.create_server((host, self.port))
        self._sockets: list[socket.socket] = [self._server]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def hold(self, client_prefix: str) -> None:
        """From now on, stall connections of clients whose id starts with `client_prefix`."""
        self._prefix = client_prefix
        self._released.clear()

    def release(self) -> None:
        """Forward everything that was held, and stop holding."""
        self._prefix = None
        self._released.set()

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
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                size = _read_exact(client, 4)
                if size is None:
                    break
                frame = _read_exact(client, struct.unpack(">i", size)[0])
                if frame is None:
                    break
                api_key, client_id = request_info(frame)
                prefix = self._prefix
                if api_key == FETCH and prefix is not None and client_id.startswith(prefix):
                    self.held += 1
                    self._released.wait()
                    self.held -= 1
                upstream.sendall(size + frame)
        self._close(client, upstream)

    def _responses(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                client.sendall(data)
        self._close(client, upstream)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._closed = True
        self._released.set()
        self._close(*self._sockets)
