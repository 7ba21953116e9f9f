"""Re-rendering a node from what its run recorded (engine/rerender.py): no I/O, the executor's own rendering."""
from __future__ import annotations

from datetime import UTC, datetime

from api.ui.inspect import human_times, not_moving
from engine.compiler import compile_workflow
from engine.prompt_cache import ResolvedPrompt
from engine.rerender import rerender
from engine.settings import Settings

FLOW = {"inputs": {"topic": {"type": "string", "required": True}},
        "nodes": [{"id": "pick", "type": "template", "config": {"template": "{{ inputs.topic }} and seals"}},
                  {"id": "ask", "type": "llm", "inputs": {"subject": "{{ pick.text }}", "n": 3},
                   "config": {"model": "m1", "system_prompt": "You write {{ subject }} poems.",
                              "prompt": {"key": "poem", "label": "production"}}},
                  {"id": "inline", "type": "llm", "after": ["pick"],
                   "config": {"model": "m1", "prompt": "Tell me about {{ pick.text }}"}}]}


def test_an_llm_node_is_rendered_again_with_its_pinned_prompt_version() -> None:
    compiled = compile_workflow(FLOW)
    pinned = ResolvedPrompt("poem", 4, "A poem of {{ n }} lines on {{ subject }}.", None, [])
    found = rerender(compiled.nodes["ask"], {"topic": "otters"}, {"pick": {"text": "otters and seals"}},
                     Settings(), pinned)
    assert found.problem is None and found.inputs == {"subject": "otters and seals", "n": 3}
    assert found.messages == [{"role": "system", "content": "You write otters and seals poems."},
                              {"role": "user", "content": "A poem of 3 lines on otters and seals."}]
    inline = rerender(compiled.nodes["inline"], {"topic": "otters"}, {"pick": {"text": "otters and seals"}}, Settings())
    assert inline.messages == [{"role": "user", "content": "Tell me about otters and seals"}]


def test_a_prompt_the_node_never_pinned_is_said_not_invented() -> None:
    found = rerender(compile_workflow(FLOW).nodes["ask"], {"topic": "otters"}, {"pick": {"text": "x"}}, Settings())
    assert found.messages is None and found.problem and "not pinned" in found.problem
    assert found.inputs == {"subject": "x", "n": 3}


def test_diagnosis_times_read_as_clock_times_and_a_run_waiting_for_an_answer_is_not_moving() -> None:
    now = datetime(2026, 1, 1, 8, 0, 30, tzinfo=UTC)
    assert human_times("due at 2026-01-01T08:00:10.5+00:00.", now) == "due at 08:00:10 UTC (20 s ago)."
    assert human_times("since 2026-01-01T08:00:10+00:00 (20 s ago)", now) == "since 08:00:10 UTC (20 s ago)"
    run = {"updated_at": "2026-01-01T08:00:29+00:00"}
    rows = [{"started_at": datetime(2026, 1, 1, 8, 0, 29, tzinfo=UTC), "finished_at": None, "queued_at": None}]
    moving = {"nodes": [{"waiting_for": "lease", "since": "2026-01-01T08:00:29+00:00"},
                        {"waiting_for": "predecessors", "since": "2026-01-01T08:00:00+00:00"}]}
    assert not not_moving(run, rows, moving, now)
    assert not_moving(run, rows, {"nodes": [{"waiting_for": "answer", "since": "2026-01-01T08:00:29+00:00"}]}, now)
    assert not_moving(run, rows, {"nodes": [{"waiting_for": "worker", "since": "2026-01-01T08:00:20+00:00"}]}, now)
    later = datetime(2026, 1, 1, 8, 0, 40, tzinfo=UTC)  # nothing changed for 11 s
    assert not_moving(run, rows, moving, later)
