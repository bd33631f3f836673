"""The few Engine.IO v4 / Socket.IO v5 text packets a benchmark client needs, over a raw WebSocket.

Why not python-socketio: the load generator's own CPU limits the benchmark, and a raw aiohttp
WebSocket reading `42["change",{...}]` by string search costs about what a `raw` client costs
(see bench/README.md for the measurement). This covers only what `bench/socketio/relay.js`
sends: the open packet, the connect ack, events, pings and close. No binary, no namespaces
other than "/", no polling transport.

Engine.IO packet = one digit type + data: 0 open, 1 close, 2 ping, 3 pong, 4 message.
A Socket.IO packet rides in an Engine.IO message: 0 connect, 1 disconnect, 2 event, 4 error,
so "40" = connect to "/", "42[...]" = an event, "44{...}" = connect refused.
"""

from __future__ import annotations

import json
from typing import Any

PATH = "/socket.io/?EIO=4&transport=websocket"
CONNECT = "40"  # client -> server: join the default namespace
PONG = "3"  # client -> server: the answer to the server's ping "2" (EIO v4: the server pings)

OPEN = "open"
PING = "ping"
CONNECTED = "connected"
EVENT = "event"
REFUSED = "refused"
CLOSE = "close"
OTHER = "other"

_KINDS = {"0": OPEN, "1": CLOSE, "2": PING, "40": CONNECTED, "42": EVENT, "44": REFUSED, "41": CLOSE}


def kind(packet: str) -> str:
    """What a text packet from the server is (by its one- or two-digit prefix)."""
    if packet[:1] == "4":
        return _KINDS.get(packet[:2], OTHER)
    return _KINDS.get(packet[:1], OTHER)


def data(packet: str) -> Any:
    """The JSON after the prefix: the open handshake's dict, an ack's {"sid"}, an event's list."""
    prefix = 2 if packet[:1] == "4" else 1
    return json.loads(packet[prefix:]) if len(packet) > prefix else None


def event(name: str, *args: Any) -> str:
    """Encode an event packet, as a server would send it (for tests and for clients that emit)."""
    return "42" + json.dumps([name, *args], separators=(",", ":"))
