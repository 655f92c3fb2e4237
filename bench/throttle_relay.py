"""A local TCP relay that caps each connection at a fixed rate, for bench/range_bench.py.

It stands for a real link on which one connection cannot take the whole bandwidth (a
per-connection shaper, a long path whose window one TCP stream does not fill): every
connection accepted on the listening port is relayed to the target, and what the target
sends back is paced to `--rate` MB/s for that connection alone (requests go through
unpaced). Connections do not share a budget, so N connections move N times as much.
The relay itself is tests/support/throttle.py (the ranged-fetch tests use it too).
Usage: python3 bench/throttle_relay.py TARGET_HOST:PORT [--listen PORT] [--rate 10]
(prints the listening port on its first line, then relays until it is stopped).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.throttle import ThrottleRelay  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target", help="HOST:PORT to relay to")
    ap.add_argument("--listen", type=int, default=0, help="port to listen on (default: a free one)")
    ap.add_argument("--rate", type=float, default=10.0, help="MB/s per connection, target to client (default 10)")
    args = ap.parse_args()
    relay = ThrottleRelay(args.target, args.rate * 1e6, args.listen)
    print(relay.port, flush=True)
    relay.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
