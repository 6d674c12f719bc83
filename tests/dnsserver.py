"""A real DNS server on loopback (UDP, dnspython's wire format) answering TXT questions from a
dict, for `newsletter dns check` tests: no test asks the internet."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsTestServer:
    """`records` maps a name (no trailing dot) to its TXT values; other names are NXDOMAIN."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = {name.lower().rstrip("."): values for name, values in records.items()}
        self.asked: list[str] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DnsTestServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().lower().rstrip(".")
            self.asked.append(name)
            values = self.records.get(name)
            if values is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT and values:
                texts = [
                    " ".join(
                        '"' + value[i : i + 250].replace('"', '\\"') + '"'
                        for i in range(0, len(value), 250)
                    )
                    for value in values
                ]
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 300, dns.rdataclass.IN, "TXT", texts)
                )
            self._socket.sendto(response.to_wire(), peer)
