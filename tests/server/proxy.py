"""A TCP proxy to PostgreSQL that loses the answer to one commit: the transaction happened, the client
never learns it (as when a connection drops right after COMMIT)."""

from __future__ import annotations

import socket
import threading
import time

# ReadyForQuery with the session idle: the statement before it committed on its own (inside a
# transaction block, the COMMIT that follows is the one whose answer is lost).
READY_IDLE = b"Z\x00\x00\x00\x05I"


class Link:
    """One client connection and its upstream session."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.armed = False  # the marked statement went out; its commit's answer is the one to lose
        self.cut = threading.Event()

    def close(self) -> None:
        for each in (self.client, self.upstream):
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            each.close()


class CommitAnswerDropper:
    """Forward connections to ``target``. The first statement containing ``marker`` is forwarded, and
    so is its transaction's COMMIT (or the statement alone, in autocommit); then that connection is
    cut before the answer gets back. ``rearm()`` makes it happen again."""

    def __init__(self, marker: bytes, target: tuple[str, int] = ("127.0.0.1", 5432)):
        self.marker = marker
        self.target = target
        self.dropped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def rearm(self) -> None:
        """Lose the answer of the next marked commit too."""
        self.dropped.clear()

    def __enter__(self) -> CommitAnswerDropper:
        return self

    def __exit__(self, *exc_info) -> None:
        self.closed = True
        self.listener.close()

    def accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            link = Link(client, socket.create_connection(self.target))
            threading.Thread(target=self.to_server, args=(link,), daemon=True).start()
            threading.Thread(target=self.to_client, args=(link,), daemon=True).start()

    def drop(self, link: Link) -> None:
        link.cut.set()
        self.dropped.set()

    def to_server(self, link: Link) -> None:
        try:
            while data := link.client.recv(65536):
                if not self.dropped.is_set():
                    if self.marker in data:
                        link.armed = True
                    elif link.armed and b"COMMIT" in data:
                        self.drop(link)  # before the answer can come back
                        link.upstream.sendall(data)
                        time.sleep(0.3)  # the database commits
                        break
                link.upstream.sendall(data)
        except OSError:
            pass
        link.close()

    def to_client(self, link: Link) -> None:
        try:
            while (data := link.upstream.recv(65536)) and not link.cut.is_set():
                if link.armed and not self.dropped.is_set() and READY_IDLE in data:
                    self.drop(link)  # the marked statement committed by itself: lose its answer
                    break
                link.client.sendall(data)
        except OSError:
            pass
        link.close()
