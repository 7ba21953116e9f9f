"""Child processes of `relayflow up`: the web server and the workers, and their command lines."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.embedded_os import Account, as_account, die_with_parent
from engine.settings import PROJECT_ROOT


GUNICORN_CONF = PROJECT_ROOT / "api" / "gunicorn_conf.py"


def web_command(port: int, *, host: str = "127.0.0.1", workers: int = 2, connections: int = 2000,
                worker_class: str = "gevent", threads: int = 64, control_socket: bool = True) -> list[str]:
    """The gunicorn command line serving the API on `host`:`port`.

    gevent (api/gunicorn_conf.py): an open event stream is a greenlet waiting on its run, so
    one process holds `connections` streams and requests at once. `worker_class="gthread"`
    (one thread per stream, `threads` per process) is kept for comparison in bench/streams.py.
    """
    command = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF), "--bind", f"{host}:{port}",
               "--worker-class", worker_class, "--workers", str(workers)]
    if worker_class == "gthread":
        command += ["--threads", str(threads)]
    else:
        command += ["--worker-connections", str(connections)]
    if not control_socket and _gunicorn_knows("control_socket"):
        # gunicorn >= 25 listens on ~/.gunicorn/gunicorn.ctl: two local stacks would share it
        command.append("--no-control-socket")
    return [*command, "api:create_app()"]


def _gunicorn_knows(setting: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(known.name == setting for known in KNOWN_SETTINGS)


def worker_command(processes: int, threads: int = 8, *, shutdown_timeout_s: float | None = None) -> list[str]:
    """The dramatiq command line running the `workers` module."""
    command = [sys.executable, "-m", "dramatiq", "workers", "--processes", str(processes),
               "--threads", str(threads)]
    if shutdown_timeout_s is not None:
        command += ["--worker-shutdown-timeout", str(int(shutdown_timeout_s * 1000))]
    return command


def child_env(database_url: str | None = None, redis_url: str | None = None) -> dict[str, str]:
    """Our environment plus the server URLs, for a web or worker process."""
    env = dict(os.environ)
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    # LiteLLM would otherwise download its model price list at import time
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # the project must be importable by gunicorn and dramatiq even when it is not installed
    paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


@dataclass
class Child:
    """One supervised process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 20) -> str:
        """The last lines the process wrote."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Supervisor:
    """Starts named child processes, notices when one dies, stops them all gracefully."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def spawn(self, name: str, command: list[str], env: dict[str, str], account: Account | None = None) -> Child:
        """Start `command` (as `account` if given) with its output in `<log_dir>/<name>.log`."""
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_dir.chmod(0o700)  # also a folder made by an older release (0755): logs are ours alone
        log_path = self.log_dir / f"{name}.log"
        # we open the log (private to us); the child only inherits the descriptor
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            # own session: Ctrl-C reaches only us, and we stop the children in order; the death
            # signal (set after the user change, which would clear it) stops them should we be killed
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM),
                                       **as_account(account))
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def dead(self) -> Child | None:
        """A child that has exited, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every child, wait up to `timeout_s`, then SIGKILL their process groups."""
        for child in self.children:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(max(0.0, deadline - time.monotonic()))
            # the whole group: gunicorn's or dramatiq's own worker processes outlive a killed
            # leader; the group id cannot be reused while any of them is alive
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        self.children.clear()
