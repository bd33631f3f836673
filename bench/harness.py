"""The honest-harness rules of bench.fanout, kept free of psutil and Postgres so tests can pin them.

- Load generators: each is one process with one event loop. Past ~80 % of a core its own
  scheduling delays what it reads, and the latency it reports is partly its own: such a point is
  marked invalid (`validity`), whatever the server did.
- How many load generators (`loadgen_procs`): enough that, at the measured ~9 µs per received
  frame, none needs more than ~40 % of a core at the series' highest rate, and one per 500
  clients for the connections themselves (handshakes, pings, per-socket bookkeeping).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import Any

SERVERS = ("rowcast", "floor", "socketio")

LOADGEN_LIMIT = 80  # % of one core: past it a load generator may be what delays delivery
CLIENTS_PER_LOADGEN = 500
MSGS_PER_LOADGEN = 40_000  # frames/s: ~9 µs each, so ~36 % of a core, room for bursts
MAX_LOADGENS = 16  # a bound, not a target: more processes than that only add scheduling noise


def loadgen_procs(clients: int, peak_rate: float) -> int:
    """How many load-generator processes for `clients` clients at up to `peak_rate` changes/s.

    One per CLIENTS_PER_LOADGEN clients, and one per MSGS_PER_LOADGEN frames/s at the series'
    highest rate, whichever is more, at least 1 and at most MAX_LOADGENS. The clients stay
    connected across the series' rates, so the highest rate decides. `validity` still judges
    every point: the rule only makes invalid points rare.
    """
    by_clients = math.ceil(clients / CLIENTS_PER_LOADGEN)
    by_frames = math.ceil(clients * peak_rate / MSGS_PER_LOADGEN)
    return max(1, min(MAX_LOADGENS, max(by_clients, by_frames)))


def validity(loadgen_cpu: Sequence[float], limit: float = LOADGEN_LIMIT) -> str:
    """'yes', or 'no: loadgen N%' when the busiest load generator passed `limit` % of a core."""
    busiest = max(loadgen_cpu, default=0.0)
    return f"no: loadgen {busiest:.0f}%" if busiest > limit else "yes"


def quotable(point: Mapping[str, Any]) -> bool:
    """May this point count as "held p99 ≤ 100 ms"? Only if it did and its load generators were valid."""
    return bool(point["ok"]) and point.get("valid", "yes") == "yes"


def servers_arg(text: str) -> list[str]:
    """`--servers rowcast,floor,socketio` -> the names in run order; unknown or none refused."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in SERVERS for n in names):
        raise argparse.ArgumentTypeError(f"servers are a comma-separated subset of {','.join(SERVERS)}")
    return list(dict.fromkeys(names))
