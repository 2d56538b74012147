"""A bounded TCP connection flood from one loopback address (a test tool).

Run as a script so that the flood does not share the gateway's process and
interpreter lock: ``python tests/support/flood.py PORT --source 127.0.0.3``.
It opens connections as fast as it can up to ``--rate`` per second, sends an
SSH banner on each, keeps at most ``--max-open`` of them (closing the oldest
with a reset, so no port waits in TIME_WAIT), stops after ``--duration``
seconds or ``--count`` connections, and prints one JSON line of what it did.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import socket
import struct
import time

BANNER = b"SSH-2.0-flood\r\n"
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def flood(
    port: int, source: str, duration: float, rate: float, max_open: int, count: int
) -> dict[str, float]:
    opened: collections.deque[socket.socket] = collections.deque()
    attempts = refused = 0
    started = time.monotonic()
    deadline = started + duration
    try:
        while attempts < count:
            now = time.monotonic()
            if now >= deadline:
                break
            ahead = attempts - (now - started) * rate
            if ahead > 0:
                time.sleep(min(ahead / rate, deadline - now))
                continue
            attempts += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            sock.settimeout(0.1)  # a full accept queue drops SYNs: move on
            try:
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", port))
                sock.sendall(BANNER)
            except OSError:
                refused += 1
                sock.close()
                continue
            opened.append(sock)
            while len(opened) > max_open:
                opened.popleft().close()
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: stop, and still report
        pass
    finally:
        for sock in opened:
            sock.close()
    spent = time.monotonic() - started
    return {"attempts": attempts, "failed": refused, "seconds": round(spent, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--source", default="127.0.0.3")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1600.0)
    parser.add_argument("--max-open", type=int, default=300)
    parser.add_argument("--count", type=int, default=200_000)
    args = parser.parse_args()
    args.duration = min(args.duration, 120.0)  # bounded whatever it is told
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = flood(args.port, args.source, args.duration, args.rate, args.max_open, args.count)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
