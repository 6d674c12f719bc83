"""Opaque unsubscribe tokens: what they cost a send, and how long `serve` takes to index them.

    python bench/bench_tokens.py [subscribers]        # default 100,000

Prints, as medians of 5 rounds: tokens made per second by release 0.1's `make_token` (the
address inside) and by the opaque maker the send uses now (two HMACs and the address key); the
time `TokenBook.fill` takes to write the references of `subscribers` people into a fresh SQLite
store; and the time to read one token back (MAC, one indexed lookup). Target: the opaque maker at
least as fast as `make_token` (what each message cost before: a send must not slow down), and a
million subscribers indexed in under two minutes (serve does it in a thread at start).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from newsletter.audience import SubscriberStore
from newsletter.audience.tokenbook import TokenBook, opaque_token_maker
from newsletter.tokens import make_token

SECRET = b"bench-secret-bench-secret"
LIST = "news.example.org"
ROUNDS = 5


def rate(make: Callable[[bytes, str], str], addresses: list[str]) -> float:
    started = time.perf_counter()
    for address in addresses:
        make(SECRET, address)
    return len(addresses) / (time.perf_counter() - started)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    addresses = [f"reader{n:07d}@example.org" for n in range(50_000)]
    opaque = opaque_token_maker(LIST)
    legacy_rates, opaque_rates = [], []
    for _ in range(ROUNDS):
        legacy_rates.append(rate(make_token, addresses))
        opaque_rates.append(rate(opaque, addresses))
    fills, reads = [], []
    for _ in range(3):
        with (
            tempfile.TemporaryDirectory() as folder,
            SubscriberStore(Path(folder) / "n.db") as store,
        ):
            csv = "email\n" + "".join(f"reader{n:07d}@example.org\n" for n in range(count))
            source = Path(folder) / "list.csv"
            source.write_text(csv, encoding="utf-8")
            store.import_csv(source)
            book = TokenBook(store.database, SECRET, LIST)
            started = time.perf_counter()
            book.fill()
            fills.append(time.perf_counter() - started)
            tokens = [
                book.make(f"reader{n:07d}@example.org") for n in range(0, count, count // 1000)
            ]
            started = time.perf_counter()
            for token in tokens:
                assert book.recipient(token) is not None
            reads.append((time.perf_counter() - started) / len(tokens))
    legacy, made = statistics.median(legacy_rates), statistics.median(opaque_rates)
    fill, read = statistics.median(fills), statistics.median(reads)
    print(f"{'make_token (release 0.1)':32} {legacy:>12,.0f} tokens/s")
    print(f"{'opaque maker (this release)':32} {made:>12,.0f} tokens/s  ({made / legacy:.2f}x)")
    print(
        f"{'fill, ' + format(count, ',') + ' subscribers':32} {fill:>12.2f} s  "
        f"({count / fill:,.0f} rows/s; 1M ≈ {1_000_000 / (count / fill):.0f} s)"
    )
    print(f"{'read one token back':32} {read * 1e6:>12.0f} µs")
    ok = made >= legacy and 1_000_000 / (count / fill) < 120
    print("target met" if ok else "target NOT met")


if __name__ == "__main__":
    main()
