"""Dropping root for the processes `relayflow up` starts: web, workers (and their reconcilers),
the fake LLM provider run as the unprivileged service user the embedded servers use.

The user must be able to execute this Python and import the project. When the interpreter
sits under a private home (`/root` is 0700, pyenv installs under it), the same remedy as for
the embedded servers' binaries applies: search permission (o+x, never read: nothing becomes
listable) on the directories on the way, said out loud. If the user still cannot start Python
(files not readable by others, say), `up` refuses and says what to do instead of running as root.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from api.localstack.embedded_os import (
    Account,
    as_account,
    grant_search,
    service_account,
)
from engine.errors import ServiceUnavailable

# Finds every package the children import and reads its first file: the service user can then
# search the directories on the way and read the files (what fails under a private home, or with
# files not readable by others). Not importing them keeps `up` fast: importing the project took
# ~2.5 s, a quarter of `up`'s time to "Serving". What it cannot see (one unreadable file deep
# in a package) still fails the child, which `up` then reports with its log's last lines.
_PROBE = ("import importlib.util as u\n"
          "for name in ('api', 'workers', 'engine', 'gunicorn', 'gevent', 'dramatiq', 'flask', 'sqlalchemy',"
          " 'psycopg', 'redis', 'litellm'):\n"
          "    spec = u.find_spec(name)\n"
          "    assert spec is not None and spec.origin, f'cannot find the {name} package'\n"
          "    open(spec.origin, 'rb').read(1)\n")


def _can_start(account: Account, env: dict[str, str]) -> str | None:
    """None if `account` can run this Python and import the project, else why not."""
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=120,
                                **as_account(account))
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if result.returncode == 0 else result.stderr.decode(errors="replace").strip()[-800:]


def _needed_paths(project_root: Path) -> list[Path]:
    paths = {Path(sys.executable), Path(os.path.realpath(sys.executable)), project_root}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        with_path = sysconfig.get_paths().get(name)
        if with_path:
            paths.add(Path(with_path))
    return sorted(paths)


def child_account(data_dir: Path, env: dict[str, str], project_root: Path) -> tuple[Account | None, list[str]]:
    """The account `up`'s children run as (None: as we are, when not root) and the directories
    that were given o+x for it. Sets the children's HOME to a private folder of that account."""
    if os.geteuid() != 0:
        return None, []
    account = service_account()
    data_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    home = data_dir / "service-home"  # the children's HOME: caches and dot-files stay off root's
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, account.uid, account.gid)
    env.update(HOME=str(home), USER=account.name, LOGNAME=account.name)
    changed = grant_search([home], account)
    why = _can_start(account, env)  # probe again only after granting search
    if why is not None:
        changed += grant_search(_needed_paths(project_root), account)
        why = _can_start(account, env)
    if why is not None:
        raise ServiceUnavailable(
            f"`relayflow up` as root runs its web server and workers as the unprivileged user '{account.name}', "
            f"which cannot start {sys.executable} with the project at {project_root}:\n{why}\n"
            "Run `relayflow up` as a normal user, or install Python and the project where other users may "
            "read them (e.g. /opt or /usr/local), or use `relayflow web` / `relayflow worker` under your "
            "own service manager.")
    return account, changed
