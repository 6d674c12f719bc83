"""A raw SMTP sink on 127.0.0.1 for benchmarks: it speaks just enough SMTP, keeps nothing, counts.

    with RawSink() as sink:                    # a child process, one asyncio loop
        ... send to sink.host, sink.port ...
        sink.settle(5000)                      # until it has counted 5,000 messages
        sink.first_at                          # time.time() of the first message's end of data

Meant to cost the sender as little as possible, so a benchmark measures the client: replies are
fixed strings, the DATA phase only looks for the end-of-data marker (across reads), and
PIPELINING is offered (every complete command line in a read is answered in one write). It is
not an SMTP server for anything else: it checks no syntax beyond the command word and never
stores a byte. Unlike aiosmtpd (~8 ms of Python per 181 KB message) it does not parse the
message, so it is not the bottleneck of a Python sender. Try it alone: `python bench/rawsink.py`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.sharedctypes
import os
import smtplib
import socket
import time
from typing import Any

HOST = "127.0.0.1"

_GREETING = b"220 rawsink ESMTP\r\n"
_EHLO = (
    b"250-rawsink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 52428800\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)
_REPLIES = {
    b"HELO": b"250 rawsink\r\n",
    b"MAIL": b"250 2.1.0 ok\r\n",
    b"RCPT": b"250 2.1.5 ok\r\n",
    b"RSET": b"250 2.0.0 ok\r\n",
    b"NOOP": b"250 2.0.0 ok\r\n",
    b"DATA": b"354 end with <CRLF>.<CRLF>\r\n",
    b"QUIT": b"221 2.0.0 bye\r\n",
}
_QUEUED = b"250 2.0.0 queued\r\n"
_END = b"\r\n.\r\n"


class _Session(asyncio.Protocol):
    """One client connection: command lines, or the body until CRLF.CRLF."""

    def __init__(self, counter: Any, first: Any) -> None:
        self.counter = counter
        self.first = first
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False
        self.tail = b""  # the last bytes of the body so far, for a marker split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(_GREETING)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        out: list[bytes] = []
        while data:
            if self.in_data:
                window = self.tail + data
                end = window.find(_END)
                if end < 0:
                    self.tail = window[-4:]
                    data = b""
                    break
                rest = window[end + len(_END) :]
                self.in_data = False
                self.tail = b""
                with self.counter.get_lock():
                    self.counter.value += 1
                    if self.first.value == 0.0:
                        self.first.value = time.time()
                out.append(_QUEUED)
                data = rest
                continue
            self.buffer += data
            data = b""
            while not self.in_data:
                newline = self.buffer.find(b"\r\n")
                if newline < 0:
                    break
                line = self.buffer[:newline]
                self.buffer = self.buffer[newline + 2 :]
                word = line[:4].upper()
                if word == b"EHLO":
                    out.append(_EHLO)
                elif word in _REPLIES:
                    out.append(_REPLIES[word])
                    if word == b"DATA":
                        # The body begins right after the command: a pipelining client may
                        # not send it before the 354, but a marker at the very start counts.
                        self.in_data = True
                        self.tail = b"\r\n"
                        data, self.buffer = self.buffer, b""
                    elif word == b"QUIT":
                        self.transport.write(b"".join(out))
                        self.transport.close()
                        return
                else:
                    out.append(b"500 5.5.2 unknown command\r\n")
        if out:
            self.transport.write(b"".join(out))


def _serve(port: int, counter: Any, first: Any, ready: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Session(counter, first), HOST, port, reuse_address=True, backlog=128
        )
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class RawSink:
    """The sink in a child process; the same small interface as bench_send.py's sinks."""

    def __init__(self, port: int | None = None) -> None:
        self.host = HOST
        self.port = port or _free_port()
        context = multiprocessing.get_context("fork")
        self._counter = context.Value("q", 0)
        self._first = context.Value("d", 0.0)
        ready = context.Event()
        self._process = context.Process(
            target=_serve, args=(self.port, self._counter, self._first, ready), daemon=True
        )
        self._process.start()
        if not ready.wait(10):
            self.stop()
            raise RuntimeError("the raw sink did not start")

    def describe(self) -> str:
        return f"raw sink (asyncio, counts only) on {self.host}:{self.port}"

    @property
    def count(self) -> int:
        return int(self._counter.value)

    @property
    def first_at(self) -> float:
        """time.time() of the first message's end of data, 0.0 before it."""
        return float(self._first.value)

    def reset(self) -> None:
        with self._counter.get_lock():
            self._counter.value = 0
            self._first.value = 0.0

    def settle(self, expected: int, timeout: float = 60.0) -> int:
        """Wait until `expected` messages were counted (or the timeout); the count."""
        deadline = time.monotonic() + timeout
        while self.count < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.count

    def cpu_seconds(self) -> float:
        pid = self._process.pid
        if pid is None:
            return 0.0
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(5)

    def __enter__(self) -> RawSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    with RawSink() as sink:
        body = b"Subject: hi\r\n\r\n.leading dot\r\nhello\r\n"
        with smtplib.SMTP(sink.host, sink.port) as client:
            for n in range(3):
                client.sendmail("a@example.org", [f"b{n}@example.org"], body)
        print(sink.describe(), "counted", sink.settle(3, 5), "messages")
