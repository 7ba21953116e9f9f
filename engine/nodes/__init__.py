"""The built-in node types, listed explicitly (like dramatiq's `default_middleware`)."""
from __future__ import annotations

from typing import Any

from engine.nodes.aggregator import AggregatorNode
from engine.nodes.base import NodeType
from engine.nodes.batch import BatchNode
from engine.nodes.code import CodeNode
from engine.nodes.http import HttpNode
from engine.nodes.human import InputNode, QuestionNode
from engine.nodes.intent import IntentNode
from engine.nodes.json_nodes import JsonParseNode, JsonSerializeNode
from engine.nodes.llm import LlmNode
from engine.nodes.loop import LoopNode
from engine.nodes.loop_body import BreakNode, ContinueNode, SetVariableNode
from engine.nodes.message import MessageNode
from engine.nodes.selector import SelectorNode
from engine.nodes.sleep import SleepNode
from engine.nodes.subworkflow import SubWorkflowNode
from engine.nodes.template import TemplateNode
from engine.nodes.text import TextNode
from engine.nodes.variable_aggregator import VariableAggregatorNode

_BUILTINS: tuple[type[NodeType[Any]], ...] = (
    TemplateNode,
    CodeNode,
    HttpNode,
    SelectorNode,
    AggregatorNode,
    JsonParseNode,
    JsonSerializeNode,
    SleepNode,
    QuestionNode,
    InputNode,
    LlmNode,
    SubWorkflowNode,
    IntentNode,
    TextNode,
    VariableAggregatorNode,
    MessageNode,
    BatchNode,
    LoopNode,
    SetVariableNode,
    BreakNode,
    ContinueNode,
)

BUILTIN_NODE_TYPES: dict[str, type[NodeType[Any]]] = {cls.type_name: cls for cls in _BUILTINS}


def get_node_type(name: str) -> type[NodeType[Any]]:
    """The node type registered under `name`; KeyError naming the known types otherwise."""
    try:
        return BUILTIN_NODE_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown node type {name!r}; known types: {', '.join(sorted(BUILTIN_NODE_TYPES))}") from None
