"""`--workers N`: one port served by N full notifier processes, and the small supervisor keeping them.

The notifier is one Python process, so one core does all its fan-out. Because the change log is
the only truth, a notifier needs nothing from another one: each worker here is a complete
notifier (its own LISTEN connection, log reader, pool and hub), exactly like a replica behind a
load balancer, and a client that lands on another worker resumes from its cursor with no gap.

The workers share the port with SO_REUSEPORT: each binds its own listening socket and Linux
spreads new connections over them. The supervisor (the process the user started) checks the
port, starts the workers, prints the banner once they all serve, restarts one that dies (with
backoff, logged), and on SIGINT/SIGTERM asks each to drain as a single notifier does.

Parent and worker talk over one socketpair: the parent sends the job (which app, which settings,
which index) and the worker answers `ready` or `error <one line>`. The parent never closes its
end while the worker runs, so EOF on the worker's end means the supervisor is gone, even if it
was SIGKILLed: the worker then exits at once rather than hold the port with nobody to restart or
stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from rowcast.errors import RowcastError
from rowcast.notifier.state import WORKER
from rowcast.serving import check_port, run_app
from rowcast.settings import Settings, log_level

log = logging.getLogger("rowcast.workers")

HEADER = "Rowcast-Worker"  # on every response of a worker: which process answered
FIRST_BACKOFF = 0.5  # seconds before restarting a worker that died
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a worker that served this long before dying restarts after FIRST_BACKOFF again
STOP_TIMEOUT = 30.0  # a worker still draining after this long on stop is killed
_LENGTH = struct.Struct("!I")

Banner = Callable[[], None]


@dataclass(frozen=True)
class Job:
    """What one worker serves: `factory` ("module:function") builds the app from `settings`."""

    factory: str
    settings: Settings
    index: int


def build(factory: str, settings: Settings) -> web.Application:
    """The app of `factory`, a "module:function" name: a name crosses to a worker process as is."""
    module, _, name = factory.partition(":")
    create: Callable[[Settings], web.Application] = getattr(importlib.import_module(module), name)
    return create(settings)


def serve(factory: str, settings: Settings, banner: Banner | None = None) -> int:
    """Serve `settings.port` until SIGINT/SIGTERM: in this process, or from `settings.workers` ones."""
    if settings.workers == 1:
        return run_app(build(factory, settings), settings, banner)

    check_port(settings.host, settings.port)
    return asyncio.run(Supervisor(factory, settings).run(banner))


# -- the supervisor ------------------------------------------------------------------------------


class Worker:
    """One worker process, started again under the same index when it dies."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: asyncio.StreamWriter | None = None

    async def start(self, job: Job) -> None:
        """Start the process and return once it serves; RowcastError with its reason if it cannot."""
        ours, theirs = socket.socketpair()
        with theirs:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rowcast.workers",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                # Its own process group: a terminal's Ctrl-C reaches the supervisor, which forwards
                # it once, instead of every worker twice.
                process_group=0,
            )
        reader, self.channel = await asyncio.open_connection(sock=ours)
        payload = pickle.dumps(job)
        self.channel.write(_LENGTH.pack(len(payload)) + payload)
        answer = (await reader.readline()).decode(errors="replace").strip()
        if answer == "ready":
            return
        code = await self.proc.wait()
        self.close()
        reason = answer.removeprefix("error ") or f"exited with {code} before serving"
        raise RowcastError(f"worker {self.index}: {reason}")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def exited(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        self.close()
        return code

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def close(self) -> None:
        """Close our end of the channel: only once the process is gone (EOF tells it we are)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None


class Supervisor:
    def __init__(self, factory: str, settings: Settings) -> None:
        self.factory = factory
        self.settings = settings
        self.workers = [Worker(i) for i in range(1, settings.workers + 1)]
        self.stopping = asyncio.Event()

    def job(self, worker: Worker) -> Job:
        return Job(self.factory, self.settings, worker.index)

    async def run(self, banner: Banner | None) -> int:
        """Start every worker, keep them running until SIGINT/SIGTERM, then stop them all."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self._start_all()
        except RowcastError:
            await self._stop()
            raise
        if self.stopping.is_set():
            return await self._stop()
        if banner is not None:
            banner()
        log.info(
            "%d workers serve port %d (pids %s)",
            len(self.workers),
            self.settings.port,
            " ".join(str(w.pid) for w in self.workers),
        )
        keepers = [asyncio.create_task(self._keep(w), name=f"rowcast-worker-{w.index}") for w in self.workers]
        await self.stopping.wait()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        return await self._stop()

    async def _start_all(self) -> None:
        """All workers serving, or the first one's reason for not starting (or a stop request)."""
        starts: asyncio.Future[Any] = asyncio.gather(*(w.start(self.job(w)) for w in self.workers))
        stop: asyncio.Future[Any] = asyncio.create_task(self.stopping.wait())
        await asyncio.wait([starts, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if starts.done():
            starts.result()
        else:
            starts.cancel()
            await asyncio.gather(starts, return_exceptions=True)

    async def _keep(self, worker: Worker) -> None:
        """Restart `worker` whenever it dies, waiting longer after each quick death."""
        backoff = FIRST_BACKOFF
        while True:
            serving_since = time.monotonic()
            pid = worker.pid
            code = await worker.exited()
            if self.stopping.is_set():
                return
            if time.monotonic() - serving_since >= STABLE_AFTER:
                backoff = FIRST_BACKOFF
            log.warning(
                "worker %d (pid %s) exited with %s: restarting it in %.1fs", worker.index, pid, code, backoff
            )
            while True:
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF)
                try:
                    await worker.start(self.job(worker))
                except RowcastError as exc:
                    log.warning("%s; trying again in %.1fs", exc, backoff)
                    continue
                log.info("worker %d restarted (pid %s)", worker.index, worker.pid)
                break

    async def _stop(self) -> int:
        """SIGTERM to every worker (each drains: 1001 to sockets); 0 if all exited cleanly in time."""
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        running = [w for w in self.workers if w.alive()]
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                codes = await asyncio.gather(*(w.exited() for w in running))
        except TimeoutError:
            for worker in running:
                worker.signal(signal.SIGKILL)
            await asyncio.gather(*(w.exited() for w in running))
            log.error("workers still running %.0fs after SIGTERM were killed", STOP_TIMEOUT)
            return 1
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


# -- a worker ------------------------------------------------------------------------------------


def _receive(channel: socket.socket) -> Job:
    with channel.makefile("rb") as stream:
        (length,) = _LENGTH.unpack(stream.read(_LENGTH.size))
        # Trusted: our own parent wrote it, over a socketpair no other process holds.
        job = pickle.loads(stream.read(length))  # noqa: S301
    assert isinstance(job, Job)
    return job


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _exit_with_supervisor(channel: socket.socket) -> None:
    """Exit at once when the supervisor is gone: nobody would restart or stop this worker.

    On Linux the kernel sees to it (PR_SET_PDEATHSIG); everywhere, a thread waits for the
    supervisor's end of the channel to close. It never waits for its own log line: the main thread
    may hold the logging lock while blocked on a full stderr pipe nobody reads any more, and a
    worker that outlived its supervisor was seen in CI doing exactly that.
    """
    _die_with_parent()

    def watch() -> None:
        with channel.dup() as sock:
            while sock.recv(1):
                pass
        threading.Thread(
            target=log.error, args=("the supervisor is gone: worker exiting",), daemon=True
        ).start()
        time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="rowcast-supervisor-watch", daemon=True).start()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the process that started it dies."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def mark(app: web.Application, index: int) -> None:
    """Name the worker on every response (and in /healthz): /metrics and /healthz are per process."""
    app[WORKER] = index
    value = str(index)

    async def header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[HEADER] = value

    app.on_response_prepare.append(header)


def work(channel: socket.socket) -> int:
    """Serve one job until SIGTERM; a reason it could not start goes to the supervisor, not stderr."""
    job = _receive(channel)
    logging.basicConfig(
        level=log_level(),
        format=f"%(asctime)s %(levelname)s [worker {job.index}] %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _exit_with_supervisor(channel)
    serving = False

    def ready() -> None:
        nonlocal serving
        serving = True
        channel.sendall(b"ready\n")

    try:
        app = build(job.factory, job.settings)
        mark(app, job.index)
        return run_app(app, job.settings, ready=ready)
    except (RowcastError, OSError) as exc:
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or repr(exc)
        if serving:
            log.error("%s", reason)
        else:
            channel.sendall(b"error " + " ".join(reason.split()).encode() + b"\n")
        return 2


def main(argv: list[str]) -> int:
    return work(socket.socket(fileno=int(argv[0])))


if __name__ == "__main__":
    # Run as rowcast.workers, not __main__: the parent pickled a rowcast.workers.Job.
    from rowcast.workers import main as worker_main

    sys.exit(worker_main(sys.argv[1:]))
