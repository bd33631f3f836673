"""The notifier under tracemalloc, for `python -m bench.memory --attribute`: who holds the bytes.

Runs the same app as `rowcast notifier` (open auth). SIGUSR2 takes the reference snapshot;
SIGUSR1 writes the allocations made since then, grouped by source line, to --report as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tracemalloc
from pathlib import Path

from aiohttp import web

from bench.common import HOST, raise_nofile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=1, help="traceback depth kept per allocation")
    args = parser.parse_args()
    raise_nofile()
    tracemalloc.start(args.frames)

    from rowcast.notifier import app as notifier_app

    from rowcast.settings import Settings

    app = notifier_app.create_app(Settings(database_url=args.database_url, auth="open", port=args.port))
    reference: list[tracemalloc.Snapshot] = []

    def take_reference() -> None:
        reference[:] = [tracemalloc.take_snapshot()]

    def report() -> None:
        snap = tracemalloc.take_snapshot()
        base = reference[0] if reference else snap
        stats = snap.compare_to(base, "traceback" if args.frames > 1 else "lineno")
        rows = [
            {"where": [str(f) for f in s.traceback], "bytes": s.size_diff, "count": s.count_diff}
            for s in stats[:60]
        ]
        total = sum(s.size_diff for s in stats)
        args.report.write_text(json.dumps({"total": total, "top": rows}, indent=1))

    async def signals(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR2, take_reference)
        loop.add_signal_handler(signal.SIGUSR1, report)

    app.on_startup.append(signals)
    web.run_app(app, host=HOST, port=args.port, print=None, shutdown_timeout=5)


if __name__ == "__main__":
    main()
