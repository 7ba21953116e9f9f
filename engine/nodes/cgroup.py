"""Per-node cgroups that bound a `code` node's whole process tree (memory and process count).

An rlimit is per process (four forked children used 889 MB under a 256 MB `RLIMIT_AS`); a
cgroup's `memory` and `pids` controllers count the tree (and `cpuacct`, or v2's `cpu.stat`,
its CPU time). Each code node gets its own cgroup
`<parent>/<worker pid>-<random>` in every hierarchy that has one of the two controllers;
`<parent>` is `relayflow-code` under the worker's own cgroup, so limits above it still apply.
cgroup v1 (`memory.limit_in_bytes`, `pids.max`) and v2 (`memory.max`, `pids.max`) are both
handled. Where no parent is writable (an unprivileged worker without delegation) `open_node_cgroup`
returns None and the caller falls back on rlimits. `delegate_code_cgroups`, run as root by
`relayflow up`, creates the parents and hands them to the service user.
"""
from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids")
# Optional: a v1 hierarchy of its own for CPU accounting (v2 counts CPU in every cgroup).
ACCOUNTING = ("cpuacct",)
PARENT_NAME = "relayflow-code"
EMPTY_WAIT_S = 3.0
PARENT_RACE_TRIES = 3


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy holding `controller`, and this process's cgroup in it."""

    controller: str
    version: int
    parent: Path  # <mount>/<own cgroup>/relayflow-code


def hierarchies() -> list[Hierarchy]:
    """Where the memory and pids controllers are mounted, with this process's code-cgroup parent."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    v1_paths: dict[str, str] = {}
    v2_path = None
    for line in own:
        number, names, path = line.split(":", 2)
        if number == "0" and names == "":
            v2_path = path
        for name in names.split(","):
            v1_paths[name] = path
    found: dict[str, Hierarchy] = {}
    v2_mounts: list[str] = []
    for line in mounts:
        parts = line.split()
        if len(parts) < 4:
            continue
        point, fstype, options = parts[1], parts[2], parts[3].split(",")
        if fstype == "cgroup":
            for controller in CONTROLLERS + ACCOUNTING:
                if controller in options and controller in v1_paths and controller not in found:
                    base = Path(point) / v1_paths[controller].lstrip("/")
                    found[controller] = Hierarchy(controller, 1, base / PARENT_NAME)
        elif fstype == "cgroup2":
            v2_mounts.append(point)
    for point in v2_mounts:
        if v2_path is None:
            break
        try:
            available = Path(point, "cgroup.controllers").read_text().split()
        except OSError:
            continue
        for controller in CONTROLLERS:
            if controller in available and controller not in found:
                found[controller] = Hierarchy(controller, 2, Path(point) / v2_path.lstrip("/") / PARENT_NAME)
    return list(found.values())


def _ensure_parent(h: Hierarchy) -> bool:
    """Create the parent (and on v2 enable the controller below it); False when not possible."""
    try:
        if h.version == 2:
            # v2 allows controllers below a cgroup with processes only at the root; elsewhere
            # the write fails (EBUSY) and the caller falls back on rlimits.
            _write(h.parent.parent / "cgroup.subtree_control", f"+{h.controller}", missing_ok=False)
        h.parent.mkdir(exist_ok=True)
        if h.version == 2:
            _write(h.parent / "cgroup.subtree_control", f"+{h.controller}", missing_ok=False)
        return os.access(h.parent, os.W_OK)
    except OSError:
        return False


def delegate_code_cgroups(uid: int, gid: int) -> list[Path]:
    """As root: create the code-cgroup parents under this process's cgroups and hand them to `uid`.

    Processes started from here inherit this process's cgroups, so their code nodes find the
    parents. Returns the delegated folders (empty when no controller could be prepared).
    """
    delegated = []
    for h in hierarchies():
        if not _ensure_parent(h):
            log.warning("code sandbox: cannot prepare the %s cgroup %s", h.controller, h.parent)
            continue
        for path in (h.parent, *h.parent.iterdir()):
            try:
                os.chown(path, uid, gid)
            except OSError:
                pass
        delegated.append(h.parent)
    return delegated


@dataclass
class NodeCgroup:
    """One code node's cgroups (one folder per hierarchy); remove() when the node ends."""

    dirs: dict[str, tuple[int, Path]] = field(default_factory=dict)

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its pid to, to join every one of this node's cgroups."""
        return [str(path / "cgroup.procs") for _, path in self.dirs.values()]

    def memory_oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit."""
        if "memory" not in self.dirs:
            return 0
        version, path = self.dirs["memory"]
        text = _read(path / ("memory.events" if version == 2 else "memory.oom_control"))
        return _counter(text, "oom_kill")

    def cpu_used_s(self) -> float:
        """CPU seconds used by all the node's processes together so far (0.0 when not counted)."""
        if "cpuacct" in self.dirs:
            text = _read(self.dirs["cpuacct"][1] / "cpuacct.usage").strip()
            return int(text) / 1e9 if text.isdigit() else 0.0
        if "memory" in self.dirs and self.dirs["memory"][0] == 2:
            return _counter(_read(self.dirs["memory"][1] / "cpu.stat"), "usage_usec") / 1e6
        return 0.0

    def pids_refused(self) -> int:
        """How many forks the pids limit refused."""
        if "pids" not in self.dirs:
            return 0
        return _counter(_read(self.dirs["pids"][1] / "pids.events"), "max")

    def kill_and_remove(self) -> None:
        """SIGKILL every process left in the node's cgroups, wait for them to go, remove the folders."""
        deadline = time.monotonic() + EMPTY_WAIT_S
        for version, path in self.dirs.values():
            if version == 2 and (path / "cgroup.kill").exists():
                _write(path / "cgroup.kill", "1")
        for _, path in self.dirs.values():
            while True:
                pids = _read(path / "cgroup.procs").split()
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, PermissionError, ValueError):
                        pass
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log.warning("code sandbox: cgroup %s still busy; left for the next sweep", path)
                        break
                    time.sleep(0.02)
            # An empty parent left behind would keep the worker's own cgroup from being removed;
            # a delegated parent is not ours to remove (EACCES) and stays, as it should.
            _rmdir_quietly(path.parent)


def open_node_cgroup(memory_bytes: int, pids_max: int) -> NodeCgroup | None:
    """A fresh cgroup per hierarchy with the limits set; None when no memory+pids pair is usable."""
    node = NodeCgroup()
    name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        for h in hierarchies():
            path = h.parent / name
            for _ in range(PARENT_RACE_TRIES):
                if not _ensure_parent(h):
                    break
                _sweep(h.parent)
                try:
                    path.mkdir()
                    break
                except FileNotFoundError:
                    continue  # another node's cleanup removed the empty parent just now
            if not path.is_dir():
                continue
            node.dirs[h.controller] = (h.version, path)
            if h.controller == "memory":
                _set_memory(h.version, path, memory_bytes)
            elif h.controller == "pids":
                _write(path / "pids.max", str(pids_max), missing_ok=False)
    except OSError as exc:
        log.warning("code sandbox: cannot set up a cgroup (%s); using rlimits only", exc)
        node.kill_and_remove()
        return None
    if not set(CONTROLLERS) <= set(node.dirs):
        node.kill_and_remove()
        return None
    return node


def _set_memory(version: int, path: Path, limit: int) -> None:
    if version == 2:
        _write(path / "memory.max", str(limit), missing_ok=False)
        _write(path / "memory.swap.max", "0")
        _write(path / "memory.oom.group", "1")  # one OOM kills the whole tree
    else:
        _write(path / "memory.limit_in_bytes", str(limit), missing_ok=False)
        _write(path / "memory.memsw.limit_in_bytes", str(limit))  # no escaping into swap


def sweep_stale() -> None:
    """Remove the empty cgroups of dead workers, then the parents if empty (e.g. after a kill -9)."""
    for h in hierarchies():
        if h.parent.is_dir():
            _sweep(h.parent)
            _rmdir_quietly(h.parent)


def _sweep(parent: Path) -> None:
    """Remove empty cgroups left by dead workers (a kill -9 leaves its node's folder behind)."""
    try:
        entries = [entry for entry in parent.iterdir() if entry.is_dir()]
    except OSError:
        return
    for entry in entries:
        owner = entry.name.split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _rmdir_quietly(entry)


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str, missing_ok: bool = True) -> None:
    try:
        path.write_text(value)
    except OSError:
        if not missing_ok:
            raise
