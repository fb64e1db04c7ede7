"""The child process of ``lama-server --ray`` that is the Ray driver.

It joins the cluster, deploys the Serve application (no HTTP proxy: the only way in is the
server's token-gated endpoint), and relays jobs from the pipe to the deployment handle:

- each job is one streaming call: the replica's :class:`ReplicaStarted`, then its outcome;
- a replica that dies mid-request costs one retry, which Serve routes to a live replica;
- no replica takes the request within ``request_timeout`` → ``unavailable``;
- ``cancel`` cancels the call (``DeploymentResponseGenerator.cancel``); the parent has already
  answered ``cancelled`` and drops anything that still comes;
- every :data:`STATUS_INTERVAL_S` it sends the deployment's status and per-replica load.

Only the event loop's thread writes to the pipe; a reader thread feeds it what the parent sends.
Messages to the parent: ``("ready", description)`` or ``("failed", reason)`` once, then
``("job", key, "started"|"done"|"failed", detail)`` and ``("status", dict)``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from enum import Enum
from multiprocessing.connection import Connection

from lama_server.daemon.ray_messages import RaySettings, ReplicaStarted

log = logging.getLogger("lama_server.ray")

STATUS_INTERVAL_S = 2.0
DEPLOYMENT = "InpaintReplica"


def run_bridge(conn: Connection, settings: RaySettings) -> None:
    """The child process's entry point: deploy, say ready, relay until told to stop."""
    from lama_model.errors import one_line

    logging.basicConfig(level=logging.INFO, format="%(asctime)s lama-server ray %(message)s")
    try:
        handle = deploy(settings)
        description = handle.describe.remote().result(timeout_s=settings.start_timeout)
    except Exception as exc:
        conn.send(("failed", one_line(exc) or type(exc).__name__))
        return
    conn.send(("ready", description))
    relay = Relay(conn, handle, settings)
    asyncio.run(relay.serve())
    if relay.remove_on_exit:
        from ray import serve

        serve.delete(settings.app)


def deploy(settings: RaySettings):
    """Join the cluster, start Serve without its HTTP proxy, run the application; its handle."""
    import ray
    from ray import serve

    from lama_server.daemon.ray_replica import InpaintReplica

    ray.init(address=settings.address, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    serve.start(proxy_location="Disabled")
    resources = {"num_gpus": settings.gpus} if settings.gpus else {"num_cpus": settings.cpus}
    if settings.replicas is not None:
        scaling = {"num_replicas": settings.replicas}
    else:
        scaling = {"autoscaling_config": {
            "min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
            "target_ongoing_requests": max(1, settings.spec.max_batch),
        }}  # fmt: skip
    deployment = serve.deployment(
        InpaintReplica, name=DEPLOYMENT, ray_actor_options=resources,
        max_ongoing_requests=2 * max(1, settings.spec.max_batch), **scaling,
    )  # fmt: skip
    return serve.run(deployment.bind(settings.spec), name=settings.app, route_prefix=None)


class Relay:
    """The bridge's event loop: one task per job, the status reports, the pipe."""

    def __init__(self, conn: Connection, handle, settings: RaySettings) -> None:
        self.conn = conn
        self.handle = handle
        self.settings = settings
        self.tasks: dict[int, asyncio.Task] = {}
        self.replicas: dict[str, dict] = {}
        self.deployment: dict = {}  # the application's status and replica counts (Serve's)
        self.remove_on_exit = False

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=_read_pipe, args=(self.conn, loop, inbox), daemon=True).start()
        reporter = asyncio.create_task(self._report_status())
        while (message := await inbox.get()) is not None:
            kind, key = message[0], message[1]
            if kind == "run":
                self.tasks[key] = asyncio.create_task(self._run(key, message[2]))
            elif kind == "cancel" and key in self.tasks:
                self.tasks.pop(key).cancel()
            elif kind == "stop":
                self.remove_on_exit = True
                break
        reporter.cancel()
        for task in self.tasks.values():
            task.cancel()

    def _tell(self, key: int, kind: str, detail: object) -> None:
        try:
            self.conn.send(("job", key, kind, detail))
        except (OSError, ValueError):
            pass  # the parent is gone; the loop ends when its pipe reads EOF

    async def _run(self, key: int, request) -> None:
        """One job: at most two attempts (a replica that died costs one retry)."""
        from lama_model.errors import one_line

        try:
            for attempt in (1, 2):
                outcome = await self._attempt(key, request)
                if outcome is not None:
                    self._tell(key, *outcome)
                    return
                log.warning("request %s: its replica died (attempt %d)", request.id, attempt)
            self._tell(key, "failed", ("unavailable", "the Ray Serve replicas running this "
                                       "request died twice; try again"))  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("request %s failed on Ray Serve", request.id)
            self._tell(key, "failed", ("unavailable", f"Ray Serve: {one_line(exc)}"))
        finally:
            self.tasks.pop(key, None)

    async def _attempt(self, key: int, request) -> tuple[str, object] | None:
        """One call of the deployment: (kind, detail) to tell, or None if the replica died."""
        from ray.exceptions import RayActorError

        response = self.handle.options(stream=True).remote(request)
        started = None
        try:
            timeout = self.settings.request_timeout
            try:
                started = await asyncio.wait_for(response.__anext__(), timeout)
            except asyncio.TimeoutError:
                response.cancel()
                return "failed", ("unavailable", f"no Ray Serve replica took the request "
                                  f"within {timeout:g} s; try again later")  # fmt: skip
            self._tell(key, "started", started)
            self._load(started, running=+1)
            outcome = await response.__anext__()
            self._load(started, running=-1, completed=1)
            return "done", outcome
        except asyncio.CancelledError:
            response.cancel()
            if started is not None:
                self._load(started, running=-1)
            raise
        except RayActorError:
            if started is not None:
                self._load(started, running=-1, died=True)
            return None

    def _load(self, started: ReplicaStarted, running: int, completed: int = 0,
              died: bool = False) -> None:  # fmt: skip
        line = self.replicas.setdefault(started.replica, {
            "replica": started.replica, "actor": started.actor, "node": started.node,
            "device": started.device, "state": "running", "running": 0, "completed": 0,
        })  # fmt: skip
        line["running"] += running
        line["completed"] += completed
        if died:
            line["state"] = "dead"
        self._send_status()  # info shows a replica's load as it changes

    def _send_status(self) -> None:
        status = {**self.deployment, "replicas": list(self.replicas.values())}
        try:
            self.conn.send(("status", status))
        except (OSError, ValueError):
            pass

    async def _report_status(self) -> None:
        """Serve's view of the deployment, every :data:`STATUS_INTERVAL_S`."""
        from ray import serve

        from lama_model.errors import one_line

        while True:
            deployment: dict = {"application": "not deployed"}
            try:
                app = (await asyncio.to_thread(serve.status)).applications.get(self.settings.app)
                if app is not None:
                    deployment["application"] = _name(app.status)
                    states = app.deployments[DEPLOYMENT].replica_states.items()
                    deployment["replica_states"] = {_name(s): n for s, n in states}
            except Exception as exc:  # the cluster is away: say so, keep relaying
                deployment["application"] = f"unknown ({one_line(exc) or type(exc).__name__})"
            self.deployment = deployment
            self._send_status()
            await asyncio.sleep(STATUS_INTERVAL_S)


def _name(state: object) -> str:
    """A Serve status (an Enum, or already its name as a string) as its name."""
    return str(state.value) if isinstance(state, Enum) else str(state)


def _read_pipe(conn: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> None:
    """The reader thread: the parent's messages into the loop; None when the parent is gone."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            loop.call_soon_threadsafe(inbox.put_nowait, None)
            return
        loop.call_soon_threadsafe(inbox.put_nowait, message)
