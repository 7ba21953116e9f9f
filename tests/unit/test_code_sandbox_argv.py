"""The bwrap command line of the code sandbox: namespaces, binds and masks (no process started)."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SandboxUnavailable
from engine.nodes.sandbox import SANDBOX_PACKAGES, SANDBOX_RUNNER, Interpreter, SandboxSpec, bwrap_argv, resolve_bwrap

PY = Interpreter(executable="/opt/py/bin/python3.11", stdlib_dirs=("/opt/py/lib/python3.11",),
                 masked_dirs=("/opt/py/lib/python3.11/site-packages",),
                 files=("/opt/py/bin/python3.11", "/opt/py/lib/libpython3.11.so.1.0"))


def binds(argv: list[str], flag: str) -> list[str]:
    """The destinations of every `flag SRC DEST` (or `flag DEST` for --tmpfs/--remount-ro)."""
    width = 2 if flag in ("--ro-bind", "--bind", "--symlink") else 1
    return [argv[i + width] for i, arg in enumerate(argv) if arg == flag]


def test_sandbox_has_every_namespace_a_clean_environment_and_dies_with_its_parent() -> None:
    argv = bwrap_argv("/usr/bin/bwrap", PY, SandboxSpec(64 * 1024 * 1024, Path("/x/runner.py"), None))
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                 "--disable-userns", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--uid") + 1] == "65534" and argv[argv.index("--gid") + 1] == "65534"
    assert argv[argv.index("--") + 1:] == [PY.executable, "-I", "-X", "utf8", SANDBOX_RUNNER]


def test_only_the_stdlib_is_bound_and_site_packages_is_masked_after_it() -> None:
    argv = bwrap_argv("/usr/bin/bwrap", PY, SandboxSpec(64 * 1024 * 1024, Path("/x/runner.py"), None))
    ro = binds(argv, "--ro-bind")
    assert "/opt/py/lib/python3.11" in ro and SANDBOX_RUNNER in ro
    assert not any(path.startswith(("/home", "/work", "/etc/ssl", "/var", "/run")) for path in ro)
    masked = "/opt/py/lib/python3.11/site-packages"
    assert masked in binds(argv, "--tmpfs") and masked in binds(argv, "--remount-ro")
    # the mask must come after the bind it hides
    assert argv.index(masked) > argv.index("/opt/py/lib/python3.11")
    assert "/" in binds(argv, "--remount-ro")


def test_tmp_is_the_only_writable_place_and_has_the_size_cap() -> None:
    argv = bwrap_argv("/usr/bin/bwrap", PY, SandboxSpec(8 * 1024 * 1024, Path("/x/runner.py"), None))
    assert binds(argv, "--bind") == []
    assert argv[argv.index("--size") + 1] == str(8 * 1024 * 1024)
    assert argv[argv.index("--size") + 5] == "/tmp"  # --size N --perms 1777 --tmpfs /tmp
    assert argv[argv.index("--chdir") + 1] == "/tmp"


def test_operator_packages_are_bound_read_only() -> None:
    argv = bwrap_argv("/usr/bin/bwrap", PY, SandboxSpec(1, Path("/x/runner.py"), Path("/srv/pkgs")))
    index = argv.index(SANDBOX_PACKAGES)
    assert argv[index - 2:index] == ["--ro-bind", "/srv/pkgs"]


def test_a_configured_bwrap_that_is_not_executable_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable, match="RELAYFLOW_CODE_SANDBOX=none") as caught:
        resolve_bwrap(str(tmp_path / "missing"))
    assert "RELAYFLOW_CODE_BWRAP" in caught.value.message and not caught.value.retryable
