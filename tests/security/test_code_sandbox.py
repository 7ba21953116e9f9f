"""Attacks from a hostile workflow author's `code` node, done for real through a real worker.

Each test saves a workflow with a `code` node, runs it on a real `dramatiq` worker process
(which sandboxes the code with bubblewrap and a per-node cgroup) and asserts what the author
sees: the node's outputs or its error. See engine/nodes/sandbox.py for what the sandbox holds.
"""
from __future__ import annotations

import getpass
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.nodes.cgroup import hierarchies, sweep_stale
from engine.settings import Settings, package_data
from tests.conftest import ROOT, processes_with, wait_for

pytestmark = pytest.mark.integration

SECRET = f"rf-secret-{uuid.uuid4().hex}"


def code_workflow(code: str, timeout_s: float = 60, **config: Any) -> dict[str, Any]:
    """A one-node workflow whose `code` node gets the run's inputs as its inputs."""
    return {
        "inputs": {"probe": {"type": "object", "default": {}}},
        "nodes": [{"id": "attack", "type": "code", "timeout_s": timeout_s, "retry": {"max_attempts": 1},
                   "inputs": {"probe": "{{ inputs.probe }}"}, "config": {"code": code, **config}}],
        "outputs": {"result": "{{ attack }}"},
    }


def run_code(api: Any, start_worker: Any, code: str, probe: dict[str, Any] | None = None,
             env: dict[str, str] | None = None, **config: Any) -> dict[str, Any]:
    """Run `code` in a real worker (with `env` added to its environment); return the node object."""
    start_worker(env={"RELAYFLOW_MODEL_SECRET_KEY": SECRET, "OPENAI_API_KEY": SECRET, **(env or {})})
    run_id = api.submit(api.create_workflow(code_workflow(code, **config)), {"probe": probe or {}})
    run = api.wait(run_id, timeout_s=90)
    return api.node(run, "attack")


def outputs_of(node: dict[str, Any]) -> dict[str, Any]:
    """The outputs of a node that must have succeeded."""
    assert node["status"] == "succeeded", node.get("error")
    return dict(node["output"])


def error_of(node: dict[str, Any]) -> dict[str, Any]:
    """The error of a node that must have failed."""
    assert node["status"] == "failed", node
    return dict(node["error"])


def dead_workers_cgroups() -> list[Path]:
    """Per-node cgroup folders whose worker (the pid their name starts with) is gone."""
    return [entry for h in hierarchies() if h.parent.is_dir() for entry in h.parent.iterdir()
            if entry.is_dir() and not Path("/proc", entry.name.split("-", 1)[0]).exists()]


# --- secrets -------------------------------------------------------------------------------

READ_ENVIRONMENTS = """
import os
def main(inputs):
    seen = {'own': dict(os.environ)}
    for pid in ['1', str(os.getppid()), 'self'] + [p for p in os.listdir('/proc') if p.isdigit()]:
        try:
            seen[pid] = open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1').replace('\\0', '\\n')
        except OSError as exc:
            seen[pid] = type(exc).__name__
    return {'seen': seen, 'pids': sorted(p for p in os.listdir('/proc') if p.isdigit())}
"""


def test_code_never_sees_the_worker_environment(api: Any, start_worker: Any) -> None:
    # Given a worker whose environment holds a model key, DATABASE_URL and REDIS_URL
    # When the code reads its own environment and every /proc/<pid>/environ it can see
    outputs = outputs_of(run_code(api, start_worker, READ_ENVIRONMENTS))
    # Then no secret is anywhere, and only the sandbox's own two processes are visible
    dumped = json.dumps(outputs)
    assert SECRET not in dumped
    assert "DATABASE_URL" not in dumped and "REDIS_URL" not in dumped and "postgresql" not in dumped
    assert outputs["pids"] == ["1", "2"]


def test_code_cannot_read_the_data_folder_model_files_or_host_folders(
        api: Any, start_worker: Any, tmp_path: Path) -> None:
    # Given a data folder holding the token file and embedded.json, and the model files
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name in ("embedded.json", "token"):
        (data_dir / name).write_text(SECRET)
    model_dir = package_data("conf") / "model"
    targets = [str(data_dir / "embedded.json"), str(data_dir / "token"), str(model_dir / "demo-echo.yaml"),
               str(model_dir), str(Path.home() / ".relayflow"), str(ROOT), "/work", "/root", "/home",
               "/etc/passwd", "/etc/shadow", "/etc/hostname", "/sys/fs/cgroup", "/run", "/var"]
    code = (
        "import os\n"
        "def main(inputs):\n"
        "    found = {}\n"
        "    for path in inputs['probe']['paths']:\n"
        "        try:\n"
        "            found[path] = os.listdir(path) if os.path.isdir(path) else open(path).read()\n"
        "        except OSError as exc:\n"
        "            found[path] = type(exc).__name__\n"
        "    return {'found': found, 'root': sorted(os.listdir('/'))}\n"
    )
    # When the code tries the real paths the worker uses
    outputs = outputs_of(run_code(api, start_worker, code, {"paths": targets},
                                  env={"RELAYFLOW_DATA_DIR": str(data_dir)}))
    # Then none of them exists in the sandbox (/root holds only the interpreter's folder)
    found = outputs["found"]
    assert SECRET not in json.dumps(found)
    for path in targets:
        if path == "/root":
            assert found[path] == [".pyenv"] or found[path] == "FileNotFoundError"
        else:
            assert found[path] == "FileNotFoundError", (path, found[path])
    assert set(outputs["root"]) <= {"tmp", "dev", "proc", "opt", "root", "etc", "lib", "lib64", "lib32", "usr"}


def test_code_cannot_import_the_servers_packages(api: Any, start_worker: Any) -> None:
    # Given the worker's interpreter, whose site-packages hold psycopg, redis and engine
    code = (
        "import importlib, sys\n"
        "def main(inputs):\n"
        "    found = {}\n"
        "    for name in ['psycopg', 'redis', 'engine', 'sqlalchemy', 'litellm', 'dramatiq']:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "            found[name] = 'imported'\n"
        "        except ImportError:\n"
        "            found[name] = 'ImportError'\n"
        "    return {'found': found, 'path': sys.path}\n"
    )
    # When the code imports them
    outputs = outputs_of(run_code(api, start_worker, code))
    # Then none is there
    assert set(outputs["found"].values()) == {"ImportError"}, outputs


def test_code_cannot_reach_loopback_postgres_or_redis(api: Any, start_worker: Any) -> None:
    code = (
        "import socket\n"
        "def main(inputs):\n"
        "    tried = {}\n"
        "    for port in (5432, 6379):\n"
        "        try:\n"
        "            socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
        "            tried[str(port)] = 'connected'\n"
        "        except OSError as exc:\n"
        "            tried[str(port)] = type(exc).__name__\n"
        "    try:\n"
        "        socket.getaddrinfo('localhost', 80)\n"
        "        tried['dns'] = 'ok'\n"
        "    except OSError as exc:\n"
        "        tried['dns'] = type(exc).__name__\n"
        "    return {'tried': tried, 'interfaces': [name for _, name in socket.if_nameindex()]}\n"
    )
    outputs = outputs_of(run_code(api, start_worker, code))
    assert outputs["tried"]["5432"] != "connected" and outputs["tried"]["6379"] != "connected", outputs
    assert outputs["interfaces"] == ["lo"]


# --- identity and files --------------------------------------------------------------------

def test_code_runs_as_its_own_unprivileged_user(api: Any, start_worker: Any) -> None:
    code = (
        "import os, socket\n"
        "def main(inputs):\n"
        "    return {'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(), 'host': socket.gethostname()}\n"
    )
    outputs = outputs_of(run_code(api, start_worker, code))
    assert outputs["uid"] == outputs["euid"] == 65534 and outputs["gid"] == 65534
    assert outputs["uid"] not in (0, os.getuid())
    assert outputs["host"] == "relayflow-code" and getpass.getuser()


def test_code_can_write_only_to_its_size_capped_tmpfs(api: Any, start_worker: Any) -> None:
    code = (
        "import os\n"
        "def main(inputs):\n"
        "    tried = {}\n"
        "    for path in ['/x', '/usr/lib/x', '/root/x', '/dev/x', '/proc/x', '/opt/relayflow/x', '/etc/x']:\n"
        "        try:\n"
        "            open(path, 'w').write('x')\n"
        "            tried[path] = 'written'\n"
        "        except OSError as exc:\n"
        "            tried[path] = type(exc).__name__\n"
        "    open('/tmp/ok', 'w').write('fine')\n"
        "    try:\n"
        "        for n in range(100):\n"
        "            open(f'/tmp/fill{n}', 'wb').write(b'x' * (1024 * 1024))\n"
        "        tried['fill'] = 'filled'\n"
        "    except OSError as exc:\n"
        "        tried['fill'] = str(exc)\n"
        "    return {'tried': tried, 'tmp': open('/tmp/ok').read()}\n"
    )
    # Given a tmpfs capped at 8 MB
    outputs = outputs_of(run_code(api, start_worker, code, env={"RELAYFLOW_CODE_TMPFS_MB": "8"}))
    tried = outputs["tried"]
    assert outputs["tmp"] == "fine"
    assert all(result != "written" for path, result in tried.items() if path != "fill"), tried
    assert "No space left on device" in tried["fill"]


def test_file_bigger_than_the_file_size_cap_fails_the_node(api: Any, start_worker: Any) -> None:
    code = "def main(inputs):\n    open('/tmp/big', 'wb').write(b'x' * (3 * 1024 * 1024))\n    return {}\n"
    error = error_of(run_code(api, start_worker, code, env={"RELAYFLOW_CODE_FILE_MB": "2"}))
    assert error["kind"] == "permanent"
    assert "file size limit exceeded (2 MB per file, RELAYFLOW_CODE_FILE_MB)" in error["message"]


def test_operator_package_folder_is_importable_and_read_only(api: Any, start_worker: Any, tmp_path: Path) -> None:
    # Given an operator's secret-free package folder
    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / "house_rules.py").write_text("ANSWER = 42\n")
    code = (
        "import house_rules\n"
        "def main(inputs):\n"
        "    try:\n"
        "        open(house_rules.__file__, 'a').write('x = 1')\n"
        "        wrote = True\n"
        "    except OSError:\n"
        "        wrote = False\n"
        "    return {'answer': house_rules.ANSWER, 'wrote': wrote}\n"
    )
    outputs = outputs_of(run_code(api, start_worker, code, env={"RELAYFLOW_CODE_PACKAGES_DIR": str(packages)}))
    assert outputs == {"answer": 42, "wrote": False}


# --- limits --------------------------------------------------------------------------------

def test_fork_bomb_is_stopped_by_the_process_limit(api: Any, start_worker: Any) -> None:
    code = "import os\ndef main(inputs):\n    while True:\n        os.fork()\n"
    error = error_of(run_code(api, start_worker, code))
    assert error["kind"] == "permanent"
    assert "process limit exceeded (64 processes, RELAYFLOW_CODE_PIDS_MAX)" in error["message"]


FOUR_CHILDREN = """
import os, time
def main(inputs):
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            data = b'x' * (inputs['probe']['mb'] * 1024 * 1024)
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return {'survived': True}
"""


@pytest.mark.parametrize("child_mb", [300, 100])
def test_tree_of_children_over_the_memory_cap_is_killed(api: Any, start_worker: Any, child_mb: int) -> None:
    # Given four children allocating 300 MB (or 100 MB: each under the cap, together over it)
    started = time.monotonic()
    error = error_of(run_code(api, start_worker, FOUR_CHILDREN, {"mb": child_mb}, memory_mb=256))
    # Then the tree is stopped well before the children's 30 s sleep, with the memory limit named
    assert error["kind"] == "permanent"
    assert "memory limit exceeded (256 MB)" in error["message"]
    assert time.monotonic() - started < 25


def test_cpu_time_limit_stops_a_busy_loop(api: Any, start_worker: Any) -> None:
    code = "def main(inputs):\n    while True:\n        pass\n"
    error = error_of(run_code(api, start_worker, code, env={"RELAYFLOW_CODE_CPU_S": "1"}))
    assert error["kind"] == "permanent"
    assert "CPU time limit exceeded (1 s), RELAYFLOW_CODE_CPU_S" in error["message"]


def test_cpu_time_limit_counts_the_processes_together(api: Any, start_worker: Any) -> None:
    # Given four processes spinning, each under the per-process limit of 2 s of CPU for 1.5 s
    code = (
        "import os, time\n"
        "def spin(seconds):\n"
        "    end = time.process_time() + seconds\n"
        "    while time.process_time() < end:\n"
        "        pass\n"
        "def main(inputs):\n"
        "    children = []\n"
        "    for _ in range(3):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            spin(1.5)\n"
        "            os._exit(0)\n"
        "        children.append(pid)\n"
        "    spin(1.5)\n"
        "    for pid in children:\n"
        "        os.waitpid(pid, 0)\n"
        "    return {'done': True}\n"
    )
    error = error_of(run_code(api, start_worker, code, env={"RELAYFLOW_CODE_CPU_S": "2"}))
    # Then the tree is stopped once it used 2 s together
    assert error["kind"] == "permanent"
    assert "CPU time limit exceeded (2 s), RELAYFLOW_CODE_CPU_S; the code's processes together" in error["message"]


def test_memory_mb_above_the_operators_cap_is_refused_at_save(web_server: str, token: str) -> None:
    definition = code_workflow("def main(inputs):\n    return {}\n", memory_mb=65536)
    response = httpx.post(f"{web_server}/v1/workflows", json={"name": "greedy", "definition": definition},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["node_id"] == "attack"
    assert "memory_mb" in body["errors"][0]["field"]
    assert "above this server's cap of 1024 MB" in body["msg"]


def test_cap_lowered_after_saving_clamps_the_nodes_memory(api: Any, start_worker: Any) -> None:
    # Given a workflow saved asking for 512 MB, and a worker whose operator cap is now 128 MB
    code = "def main(inputs):\n    data = b'x' * (200 * 1024 * 1024)\n    return {'n': len(data)}\n"
    node = run_code(api, start_worker, code, env={"RELAYFLOW_CODE_MEMORY_MAX_MB": "128"}, memory_mb=512)
    # Then the code gets the cap, not what the author asked for
    assert "memory limit exceeded (128 MB)" in error_of(node)["message"]


# --- lifetime ------------------------------------------------------------------------------

DETACHED_GRANDCHILD = """
import os, signal, sys, time
def main(inputs):
    if os.fork() == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)', inputs['probe']['marker']])
    time.sleep(120)
"""


def test_killed_worker_takes_every_sandboxed_process_with_it(api: Any, start_worker: Any,
                                                            settings: Settings) -> None:
    # Given a code node whose grandchild left its session and ignores SIGTERM
    marker = f"rf-orphan-{uuid.uuid4().hex}"
    worker = start_worker()
    run_id = api.submit(api.create_workflow(code_workflow(DETACHED_GRANDCHILD, timeout_s=300)),
                        {"probe": {"marker": marker}})
    wait_for(lambda: processes_with(marker), timeout_s=60)
    # When the whole worker process group is killed with SIGKILL
    worker.kill(signal.SIGKILL)
    # Then no sandboxed process survives it
    wait_for(lambda: not processes_with(marker), timeout_s=10)
    assert api.run(run_id)["status"] in ("running", "queued")
    # and the dead worker's per-node cgroups are empty, so they can be removed
    wait_for(lambda: (sweep_stale(), not dead_workers_cgroups())[1], timeout_s=10)


# --- fail closed ---------------------------------------------------------------------------

def test_code_fails_closed_when_bwrap_is_missing(api: Any, start_worker: Any, tmp_path: Path) -> None:
    code = "def main(inputs):\n    return {'ran': True}\n"
    error = error_of(run_code(api, start_worker, code, env={"RELAYFLOW_CODE_BWRAP": "/nonexistent/bwrap"}))
    assert error["kind"] == "permanent"
    message = error["message"]
    assert "code node 'attack'" in message and "sandbox cannot start" in message
    assert "RELAYFLOW_CODE_BWRAP" in message and "RELAYFLOW_CODE_SANDBOX=none" in message
    # and the operator was told when the worker started
    wait_for(lambda: "code nodes will fail on this worker" in (tmp_path / "worker0.log").read_text())


def test_code_fails_closed_when_bwrap_fails(api: Any, start_worker: Any, tmp_path: Path) -> None:
    # Given a bwrap that cannot create namespaces (as in a locked-down container)
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    code = "def main(inputs):\n    return {'ran': True}\n"
    error = error_of(run_code(api, start_worker, code, env={"RELAYFLOW_CODE_BWRAP": str(broken)}))
    assert error["kind"] == "permanent"
    assert "code node 'attack'" in error["message"] and "sandbox did not start" in error["message"]
    assert "No permissions to create new namespace" in error["message"]


def test_operator_may_opt_out_of_the_sandbox_explicitly(api: Any, start_worker: Any, tmp_path: Path) -> None:
    code = "import os\ndef main(inputs):\n    return {'uid': os.getuid()}\n"
    node = run_code(api, start_worker, code,
                    env={"RELAYFLOW_CODE_BWRAP": "/nonexistent/bwrap", "RELAYFLOW_CODE_SANDBOX": "none"})
    assert outputs_of(node) == {"uid": os.getuid()}
    log = (tmp_path / "worker0.log").read_text()
    assert "code nodes run WITHOUT a sandbox" in log


# --- legitimate code -----------------------------------------------------------------------

LEGIT = """
import collections, datetime, json, math, re
def main(inputs):
    words = re.findall(r"[a-z]+", inputs['probe']['text'].lower())
    print('counting', len(words), 'words')
    return {
        'top': collections.Counter(words).most_common(2),
        'root': math.sqrt(16),
        'day': datetime.date(2026, 1, 2).isoformat(),
        'json': json.loads(json.dumps({'a': [1, 2]})),
    }
"""


def test_legitimate_code_still_works(api: Any, start_worker: Any) -> None:
    outputs = outputs_of(run_code(api, start_worker, LEGIT, {"text": "the cat and the hat"}))
    assert outputs == {"top": [["the", 2], ["cat", 1]], "root": 4.0, "day": "2026-01-02",
                       "json": {"a": [1, 2]}}
