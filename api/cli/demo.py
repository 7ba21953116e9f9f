"""`relayflow up --demo`: register every example workflow, then run them all and show them live.

An example may call another as a sub-workflow (by name), and saving a workflow checks that its
callees exist, so the examples are created callees first, every one before any run starts.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from rich.markup import escape

from api.cli.base import console, follow, print_error, print_outcome
from api.cli.client import Client, WorkflowFile
from engine.errors import EngineError


def callees(workflow: WorkflowFile) -> set[str]:
    """The workflows (names or ids) `workflow`'s sub-workflow nodes call, in inline bodies too."""
    # Imported here: engine.children loads the store (SQLAlchemy), which `watch`, `status`... never need.
    from engine.children import static_refs

    return {ref for _node, ref, _version in static_refs(workflow.definition)}


def dependency_order(workflows: Iterable[WorkflowFile]) -> list[WorkflowFile]:
    """The workflows with each one after the others it calls (by name); otherwise in the given order.

    A call to a name not among them (or a cycle, which saving refuses anyway) orders nothing."""
    pending = list(workflows)
    names = {w.name for w in pending}
    calls = {id(w): callees(w) & names for w in pending}
    ordered: list[WorkflowFile] = []
    done: set[str] = set()
    while pending:
        ready = [w for w in pending if calls[id(w)] <= done] or pending[:1]  # a cycle: take the first as is
        for workflow in ready:
            ordered.append(workflow)
            done.add(workflow.name)
            pending.remove(workflow)
    return ordered


def run_demos(client: Client, examples_dir: Path, check: Callable[[], None] | None = None) -> bool:
    """Register every workflow file in `examples_dir` (callees first), then run each with its
    `demo_inputs` and show them live. True if every one was started and succeeded."""
    paths = sorted(p for p in examples_dir.glob("*") if p.suffix in (".yaml", ".yml", ".json"))
    read: list[tuple[WorkflowFile, str]] = []
    for path in paths:
        try:
            read.append((WorkflowFile.read(path), path.name))
        except EngineError as exc:
            print_error(exc, path.name)
    file_of = {id(workflow): name for workflow, name in read}
    created: list[tuple[str, WorkflowFile, str]] = []
    for workflow in dependency_order(w for w, _ in read):
        try:
            workflow_id = client.create_workflow(workflow.name, workflow.definition, workflow.description)["workflow_id"]
            created.append((workflow_id, workflow, file_of[id(workflow)]))
        except EngineError as exc:
            print_error(exc, file_of[id(workflow)])
    started: list[tuple[str, str | None]] = []
    for workflow_id, workflow, title in sorted(created, key=lambda c: c[2]):
        try:
            started.append((client.submit_run(workflow_id, workflow.demo_inputs)["run_id"], title))
        except EngineError as exc:
            print_error(exc, title)
    if not started:
        console.print("[yellow]No demo workflow could be started.[/]")
        return False
    console.print(f"Demo: {len(started)} of {len(paths)} example workflow(s) started: "
                  f"{escape(', '.join(str(title) for _, title in started))}", soft_wrap=True)
    outcomes = [print_outcome(final, title) for (_, title), final in zip(started, follow(client, started, check),
                                                                         strict=True)]
    return len(started) == len(paths) and not any(outcomes)
