"""Fixtures for LLM tests: the fake OpenAI provider on a free loopback port, and a model folder."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.localstack.fake_llm import FakeLLM

FAKE_KEY = "sk-fake-TESTKEY-1234567890abcdef"


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    """A running fake provider; DEMO_LLM_URL/KEY point the demo models (and children) at it."""
    fake = FakeLLM().start()
    monkeypatch.setenv("DEMO_LLM_URL", fake.base_url)
    monkeypatch.setenv("FAKE_LLM_KEY", FAKE_KEY)
    yield fake
    fake.stop()


@pytest.fixture
def model_dir(settings: Any, tmp_path: Path) -> Path:
    """An empty model folder the test's settings (and its workers) read."""
    folder = tmp_path / "models"
    folder.mkdir()
    settings.model_dir = folder
    return folder


@pytest.fixture
def write_model(model_dir: Path, fake_llm: FakeLLM) -> Callable[..., Path]:
    """Write `<id>.yaml`: an openai-protocol model served by the fake provider as `upstream` (at `pricing`)."""

    def write(model_id: str, upstream: str = "echo", timeout: str = "10s", pricing: dict[str, Any] | None = None,
              **meta: Any) -> Path:
        doc: dict[str, Any] = {"id": model_id, "name": f"Test {model_id}",
                               "meta": {"protocol": "openai", "capability": {"json_mode": True},
                                        "conn_config": {"base_url": fake_llm.base_url, "api_key": "${FAKE_LLM_KEY}",
                                                        "model": upstream, "timeout": timeout}, **meta}}
        if pricing is not None:
            doc["pricing"] = pricing
        path = model_dir / f"{model_id}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    return write
