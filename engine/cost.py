"""What an LLM attempt cost: its token usage times the answering model's declared prices (pure).

Prices are USD per million tokens (`pricing` in a model file, engine/models/files.py). Cached
input tokens are part of the input tokens a provider reports (OpenAI's
`usage.prompt_tokens_details.cached_tokens`), so they are billed at the cached price instead of
the input price, never twice. Decimal arithmetic: sums over thousands of attempts stay exact.
"""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from engine.models.files import Pricing

MILLION = Decimal(1_000_000)


def attempt_cost(pricing: Pricing | None, usage: Mapping[str, int] | None) -> Decimal:
    """USD for one answer's `usage` ({input_tokens, output_tokens, cached_input_tokens}); 0 unpriced."""
    if pricing is None or not usage:
        return Decimal(0)
    inputs = int(usage.get("input_tokens") or 0)
    cached = min(int(usage.get("cached_input_tokens") or 0), inputs)
    cached_price = pricing.cached_input_per_million
    if cached_price is None:
        cached_price = pricing.input_per_million
    total = ((inputs - cached) * pricing.input_per_million + cached * cached_price
             + int(usage.get("output_tokens") or 0) * pricing.output_per_million)
    return total / MILLION


def usd(value: Decimal | float | int | None) -> float:
    """A cost as a JSON number (float), from what the database or a report holds."""
    return float(value or 0)
