"""Model files, environment models, masking and the protocol → LiteLLM mapping (no servers)."""
from __future__ import annotations

from pathlib import Path

import yaml

from engine.models.calling import litellm_params, router_config
from engine.models.files import ModelDoc, env_docs, interpolate, load_sources, parse_doc
from engine.models.registry import Registry, diff, mask
from engine.settings import package_data

GOOD = {"id": 1, "name": "One", "meta": {"protocol": "openai",
                                          "conn_config": {"model": "gpt-x", "api_key": "${KEY}", "timeout": "2m"}}}


def test_a_bad_file_is_reported_with_its_path_and_field_and_the_others_load(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**GOOD, "id": 2, "meta": {"protocol": "nope",
                                                                                   "conn_config": {"model": "m"}}}))
    (tmp_path / "broken.yaml").write_text("id: [unclosed")
    docs, problems = load_sources(tmp_path, {})
    assert list(docs) == ["1"]
    where = {(Path(p.source).name, p.field) for p in problems}
    assert ("bad.yaml", "meta.protocol") in where and ("broken.yaml", None) in where


def test_placeholders_resolve_from_the_environment_and_stay_in_the_stored_document() -> None:
    missing: set[str] = set()
    assert interpolate({"a": "${X}", "b": ["${Y:-dflt}", "${Z}"]}, {"X": "1"}, missing) == {"a": "1", "b": ["dflt", ""]}
    assert missing == {"Z"}
    doc, problems = parse_doc(GOOD, "good.yaml", {"KEY": "sk-secret-value-1234"})
    assert not problems and isinstance(doc, ModelDoc)
    assert doc.meta.conn_config.api_key == "sk-secret-value-1234" and doc.meta.conn_config.timeout == 120


def test_environment_models_keep_their_key_as_a_placeholder() -> None:
    env = {"MODEL_PROTOCOL_0": "ark", "MODEL_OPENCOZE_ID_0": "100", "MODEL_NAME_0": "Doubao",
           "MODEL_ID_0": "ep-1", "MODEL_API_KEY_0": "sk-envkey-abcdef", "MODEL_BASE_URL_0": "https://ark.example/v3",
           "MODEL_PROTOCOL_1": "qwen", "MODEL_ID_1": "qwen3"}
    docs, problems = env_docs(env)
    assert not problems and list(docs) == ["100", "env-1"]
    assert docs["100"]["meta"]["conn_config"]["api_key"] == "${MODEL_API_KEY_0}"
    assert "sk-envkey" not in str(docs)


def test_keys_are_masked_and_scrubbed_from_messages() -> None:
    assert mask("sk-abcdefghwxyz") == "sk-a***wxyz" and mask("short") == "***" and mask(None) is None
    registry = Registry.build(None)
    assert "sk-abcdefgh" not in registry.scrub("Incorrect API key provided: sk-abcdefghijkl")


def test_each_protocol_maps_to_its_litellm_provider() -> None:
    docs, _ = load_sources(package_data("conf") / "model" / "templates", {"ARK_ENDPOINT_ID": "ep-2"})
    prefixes = {ModelDoc.model_validate(d).meta.protocol: litellm_params(ModelDoc.model_validate(d))["model"].split("/")[0]
                for d in docs.values()}
    assert prefixes == {"openai": "openai", "claude": "anthropic", "ark": "volcengine", "deepseek": "deepseek",
                        "gemini": "gemini", "qwen": "dashscope", "ollama": "ollama_chat"}


def test_the_router_retries_only_what_can_succeed_on_retry() -> None:
    policy = router_config(Registry.build(None))["retry_policy"]
    assert all(policy[f"{name}ErrorRetries"] == 0 for name in ("BadRequest", "Authentication", "NotFound",
                                                               "PermissionDenied"))
    assert all(policy[f"{name}ErrorRetries"] > 0 for name in ("RateLimit", "Timeout", "InternalServer"))


def test_a_refresh_reports_new_updated_and_removed_models() -> None:
    assert diff({"a": {"x": 1}, "b": {"x": 1}}, {"b": {"x": 2}, "c": {}}) == (["c"], ["b"], ["a"])
