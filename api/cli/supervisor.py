"""Child processes of `relayflow up`: the web server and the workers, their command lines, and
the supervisor that starts them, restarts one that dies, and stops them all."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from api.localstack.embedded_os import Account, as_account, die_with_parent

# gunicorn loads it as a file (so its master imports nothing of ours): found beside the
# installed `api` package, in a checkout or a wheel alike
GUNICORN_CONF = resources.files("api") / "gunicorn_conf.py"
# The folder our packages are imported from: a checkout (put on the children's PYTHONPATH, so
# they import the same code as this process whatever their working directory), or site-packages
# (found by every interpreter of this environment already: not put before the standard library).
IMPORT_ROOT = Path(str(resources.files("api"))).resolve().parent
_INSTALLED = IMPORT_ROOT in {Path(sysconfig.get_paths()[name]).resolve() for name in ("purelib", "platlib")}


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
    from gunicorn.config import (
        KNOWN_SETTINGS,  # here: only `up` and `web` need it, not every command
    )

    return any(known.name == setting for known in KNOWN_SETTINGS)


def worker_command(processes: int, threads: int = 8, *, shutdown_timeout_s: float | None = None) -> list[str]:
    """The dramatiq command line running the `workers` module (its main process logging as the workers do)."""
    command = [sys.executable, "-m", "api.cli.dramatiq_main", "--processes", str(processes),
               "--threads", str(threads)]
    if shutdown_timeout_s is not None:
        command += ["--worker-shutdown-timeout", str(int(shutdown_timeout_s * 1000))]
    return command


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess folder (engine/metrics.py)


def fresh_metrics_dir(folder: Path, account: Account | None = None) -> Path:
    """An empty folder for the Prometheus values of every web and worker process (multiprocess
    mode): emptied at each start, since a dead process's files would otherwise count forever."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    if account is not None:
        os.chown(folder, account.uid, account.gid)
    return folder


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
    paths = ([] if _INSTALLED else [str(IMPORT_ROOT)]) + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


# A child that dies is restarted after RESTART_FIRST_S, doubling per death up to RESTART_MAX_S;
# one that stayed up STABLE_AFTER_S starts from RESTART_FIRST_S again (a new fault, not a loop).
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0


@dataclass
class Child:
    """One supervised process, how to start it again, and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    command: list[str]
    env: dict[str, str]
    account: Account | None = None
    restart: bool = False
    started_at: float = field(default_factory=time.monotonic)
    delay_s: float = RESTART_FIRST_S  # the wait before the next restart
    restart_at: float | None = None  # set while a dead child waits for its restart
    restarts: int = 0

    def tail(self, lines: int = 20) -> str:
        """The last lines the process wrote."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def exit_status(returncode: int) -> str:
    """How a process ended, for a person: `exit status 3`, or `killed by SIGKILL`."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Supervisor:
    """Starts named child processes, restarts those that may be restarted when they die (with
    backoff), reports the others, and stops them all gracefully."""

    def __init__(self, log_dir: Path, say: Callable[[str], None] = print) -> None:
        self.log_dir = log_dir
        self.say = say  # one line per restart
        self.children: list[Child] = []

    def spawn(self, name: str, command: list[str], env: dict[str, str], account: Account | None = None, *,
              restart: bool = False) -> Child:
        """Start `command` (as `account` if given) with its output in `<log_dir>/<name>.log`;
        `restart`: start it again whenever it dies (see `tend`)."""
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_dir.chmod(0o700)  # also a folder made by an older release (0755): logs are ours alone
        log_path = self.log_dir / f"{name}.log"
        child = Child(name, self._popen(command, env, account, log_path), log_path, command, env, account, restart)
        self.children.append(child)
        return child

    @staticmethod
    def _popen(command: list[str], env: dict[str, str], account: Account | None,
               log_path: Path) -> subprocess.Popen[bytes]:
        # we open the log (private to us); the child only inherits the descriptor
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            # own session: Ctrl-C reaches only us, and we stop the children in order; the death
            # signal (set after the user change, which would clear it) stops them should we be killed
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM),
                                    **as_account(account))

    def dead(self) -> Child | None:
        """A child that has exited, if any (restartable or not: for the start-up, where a death is fatal)."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def tend(self) -> Child | None:
        """Restart the restartable children that died, each after its backoff (one line said per death);
        return a dead child that may not be restarted, if any."""
        now = time.monotonic()
        for child in self.children:
            if child.process.poll() is None:
                continue
            if not child.restart:
                return child
            if child.restart_at is None:
                if now - child.started_at >= STABLE_AFTER_S:
                    child.delay_s = RESTART_FIRST_S
                child.restart_at = now + child.delay_s
                self.say(f"{child.name} exited ({exit_status(child.process.returncode)}) after "
                         f"{now - child.started_at:.0f} s; restarting it in {child.delay_s:g} s "
                         f"(restart {child.restarts + 1}; see {child.log_path})")
                child.delay_s = min(child.delay_s * 2, RESTART_MAX_S)
                # what is left of its group (dramatiq's or gunicorn's own processes) goes first
                _kill_group(child.process.pid)
            elif now >= child.restart_at:
                child.process = self._popen(child.command, child.env, child.account, child.log_path)
                child.started_at, child.restart_at, child.restarts = time.monotonic(), None, child.restarts + 1
        return None

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
            _kill_group(child.process.pid)
            child.process.wait()
        self.children.clear()


def _kill_group(pid: int) -> None:
    # the whole group: gunicorn's or dramatiq's own worker processes outlive a killed leader;
    # the group id cannot be reused while any of them is alive
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
