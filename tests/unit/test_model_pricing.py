"""Model prices and what an attempt costs (no servers)."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import yaml

from engine.cost import attempt_cost
from engine.models.calling import _usage
from engine.models.files import Pricing, env_docs, load_sources, parse_doc
from engine.models.registry import Registry
from engine.settings import package_data

BASE = {"id": "m", "name": "M", "meta": {"protocol": "openai", "conn_config": {"model": "gpt-x"}}}


def test_cost_bills_cached_input_at_its_own_price_and_the_rest_at_the_input_price() -> None:
    pricing = Pricing(input_per_million="0.15", output_per_million=0.60, cached_input_per_million="0.075")
    usage = {"input_tokens": 1_000_000, "output_tokens": 500_000, "cached_input_tokens": 400_000}
    # (1M - 400k) x 0.15 + 400k x 0.075 + 500k x 0.60, per million
    assert attempt_cost(pricing, usage) == Decimal("0.09") + Decimal("0.03") + Decimal("0.30")


def test_cached_input_defaults_to_the_input_price_and_an_unpriced_model_costs_nothing() -> None:
    pricing = Pricing(input_per_million="2", output_per_million="4")
    assert attempt_cost(pricing, {"input_tokens": 10, "output_tokens": 5, "cached_input_tokens": 10}) == Decimal("0.00004")
    assert attempt_cost(None, {"input_tokens": 10, "output_tokens": 5}) == 0
    assert attempt_cost(pricing, None) == 0


def test_a_negative_or_non_numeric_price_is_a_problem_naming_the_file_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "neg.yaml").write_text(yaml.safe_dump({**BASE, "id": "neg", "pricing": {"input_per_million": -1}}))
    (tmp_path / "text.yaml").write_text(yaml.safe_dump({**BASE, "id": "text",
                                                         "pricing": {"output_per_million": "cheap"}}))
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({**BASE, "id": "ok", "pricing": {"input_per_million": "0.5"}}))
    docs, problems = load_sources(tmp_path, {})
    assert list(docs) == ["ok"]
    where = {(Path(p.source).name, p.field) for p in problems}
    assert where == {("neg.yaml", "pricing.input_per_million"), ("text.yaml", "pricing.output_per_million")}


def test_environment_models_take_prices_from_model_price_variables() -> None:
    docs, problems = env_docs({"MODEL_PROTOCOL_0": "openai", "MODEL_ID_0": "gpt-x", "MODEL_PRICE_INPUT_0": "0.2",
                               "MODEL_PRICE_OUTPUT_0": "0.8", "MODEL_PRICE_CACHED_INPUT_0": "0.1"})
    assert problems == []
    doc, _ = parse_doc({k: v for k, v in docs["env-0"].items() if k != "_source"}, "env", {})
    assert doc is not None and doc.pricing is not None
    assert doc.pricing.view() == {"input_per_million": "0.2", "output_per_million": "0.8",
                                  "cached_input_per_million": "0.1", "currency": "USD"}


def test_the_demo_models_declare_prices_and_the_registry_shows_them() -> None:
    docs, problems = load_sources(package_data("conf") / "model", {})
    assert problems == []
    doc, _ = parse_doc({k: v for k, v in docs["demo-echo"].items() if k != "_source"}, "demo", {})
    assert doc is not None
    registry = Registry(1, docs, {"demo-echo": doc})
    assert registry.describe("demo-echo")["pricing"]["input_per_million"] == "0.15"


def test_usage_reads_cached_tokens_from_prompt_tokens_details() -> None:
    class Details:
        cached_tokens = 7

    class Usage:
        prompt_tokens, completion_tokens, prompt_tokens_details = 20, 5, Details()

    assert _usage(Usage()) == {"input_tokens": 20, "output_tokens": 5, "cached_input_tokens": 7}
    assert _usage(None) == {"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0}
