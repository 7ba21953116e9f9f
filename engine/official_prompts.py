"""The official prompt templates (Coze Studio's `get_official_prompt_list`): our own six. No I/O.

Like Coze's, they use its input-slot syntax so that its editor shows fillable slots.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OfficialPrompt:
    """A built-in template (ids from 10001, as in Coze Studio)."""

    id: int
    name: str
    description: str
    prompt_text: str


def _slot(placeholder: str) -> str:
    return f'{{#InputSlot placeholder="{placeholder}" mode="input"#}}{{#/InputSlot#}}'


OFFICIAL_PROMPTS: tuple[OfficialPrompt, ...] = (
    OfficialPrompt(10001, "General assistant", "A helpful assistant with a role and a tone",
                   f"# Role\nYou are {_slot('a role, e.g. a travel planner')}.\n\n## Tone\n{_slot('the tone')}\n\n"
                   "## Rules\n- Answer in the language of the question.\n- Say so when you do not know."),
    OfficialPrompt(10002, "Summariser", "Summarise a text in a few bullet points",
                   f"Summarise the text below in {_slot('how many')} bullet points, keeping names and figures.\n\n"
                   "Text:\n{{input}}"),
    OfficialPrompt(10003, "Translator", "Translate faithfully into a target language",
                   f"Translate the text into {_slot('the target language')}. Keep the formatting; do not add "
                   "explanations.\n\nText:\n{{input}}"),
    OfficialPrompt(10004, "Classifier", "Put a text into one of listed categories",
                   f"Classify the text into exactly one of: {_slot('the categories, comma separated')}.\n"
                   "Answer with the category only.\n\nText:\n{{input}}"),
    OfficialPrompt(10005, "Information extractor", "Extract fields from a text as JSON",
                   f"Extract these fields from the text as a JSON object: {_slot('the fields')}.\n"
                   "Use null for a field the text does not give.\n\nText:\n{{input}}"),
    OfficialPrompt(10006, "Customer support agent", "Answer customers politely from a knowledge base",
                   f"# Role\nYou answer customers of {_slot('the company')}.\n\n## Rules\n"
                   "- Be brief and polite.\n- Only use the facts given in the context.\n"
                   "- Hand over to a person when asked.\n\nContext:\n{{context}}\n\nQuestion:\n{{input}}"),
)


def official_prompts(keyword: str | None = None) -> list[OfficialPrompt]:
    """The templates whose name or text holds `keyword` (case-insensitive), all without one."""
    if not keyword:
        return list(OFFICIAL_PROMPTS)
    needle = keyword.casefold()
    return [p for p in OFFICIAL_PROMPTS if needle in p.name.casefold() or needle in p.prompt_text.casefold()]
