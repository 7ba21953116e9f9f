"""The in-process message hop of fast lifecycle tests: messages come due in order, delays hold."""
from __future__ import annotations

from engine.testing import MemoryDispatcher


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_messages_come_due_in_send_order_and_a_delayed_one_only_after_its_delay() -> None:
    # Given a retry sent with a 2 s delay between two plain messages
    clock = Clock()
    messages = MemoryDispatcher(clock=clock)
    messages.send("run", "a")
    messages.send("run", "retry", delay_s=2.0)
    messages.send("run", "b")
    # When they are taken now: the plain ones in send order, and the retry is not due yet
    assert [messages.pop_due(), messages.pop_due(), messages.pop_due()] == [("run", "a", False), ("run", "b", False), None]
    assert messages.due_in_s() == 2.0 and len(messages) == 1
    # Then after its delay the retry is due
    clock.now += 2.0
    assert messages.pop_due() == ("run", "retry", False)
    assert messages.due_in_s() is None


def test_a_forward_dispatcher_also_receives_every_message() -> None:
    seen: list[tuple[str, str, float, bool]] = []

    class Recorder:
        def send(self, run_id: str, node_id: str, delay_s: float = 0.0, pure: bool = False) -> None:
            seen.append((run_id, node_id, delay_s, pure))

    messages = MemoryDispatcher(forward=Recorder())
    messages.send("run", "a", pure=True)
    messages.send("run", "b", delay_s=0.5)
    assert seen == [("run", "a", 0.0, True), ("run", "b", 0.5, False)] and len(messages) == 2
    # a pure node's message stays one (the unclaimed path); a delayed one (a retry) never is
    assert messages.pop_due() == ("run", "a", True)
