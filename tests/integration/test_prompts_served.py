"""The prompt library through a real gunicorn server: the CLI's `prompts` commands, and two
concurrent saves over HTTP (one 201, one 409)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from api.cli.prompts import prompts

pytestmark = pytest.mark.integration

PROMPT_FILE = """key: support
name: 客服 answer
tags: [cs]
text: |
  Answer {{ topic }} 🦦
variables:
  - {name: topic}
labels: [production]
"""


def test_the_cli_and_concurrent_saves_against_gunicorn(web_server: str, token: str, tmp_path: Path) -> None:
    runner = CliRunner()
    where = ["--url", web_server, "--token", token]
    file = tmp_path / "support.yaml"
    file.write_text(PROMPT_FILE, encoding="utf-8")
    # push creates, an unchanged push saves nothing, a changed one saves version 2
    assert "created, version 1" in runner.invoke(prompts, ["push", str(file), *where]).output
    assert "unchanged" in runner.invoke(prompts, ["push", str(file), *where]).output
    file.write_text(PROMPT_FILE.replace("Answer", "Kindly answer"), encoding="utf-8")
    result = runner.invoke(prompts, ["push", str(file), *where])
    assert result.exit_code == 0 and "saved, version 2" in result.output, result.output
    shown = runner.invoke(prompts, ["show", "support", "--version", "1", *where])
    assert "Answer {{ topic }} 🦦" in shown.output
    diff = runner.invoke(prompts, ["diff", "support", "1", "2", *where]).output
    assert "-Answer {{ topic }} 🦦" in diff and "+Kindly answer {{ topic }} 🦦" in diff
    assert "production → 1 (was 2)" in runner.invoke(prompts, ["label", "support", "production", "1", *where]).output
    listed = runner.invoke(prompts, ["list", "-q", "客服", *where]).output
    assert "support" in listed
    assert runner.invoke(prompts, ["show", "nope", *where]).exit_code == 1

    # two saves based on version 2 at once, over HTTP
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def save(text: str) -> None:
        with httpx.Client(base_url=web_server, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            barrier.wait()
            response = http.post("/v1/prompts/support/versions", json={"base_version": 2, "text": text})
            statuses.append(response.status_code)

    threads = [threading.Thread(target=save, args=(t,)) for t in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [201, 409]
    with httpx.Client(base_url=web_server, headers={"Authorization": f"Bearer {token}"}) as http:
        got: Any = http.get("/v1/prompts/support", params={"label": "latest"}).json()
    assert got["latest_version"] == 3
