"""The canvas as a CRDT: agents on a 2D plane, edges between them, and each agent's config,
in a pycrdt (Yjs-compatible) document."""

from __future__ import annotations

import uuid
from typing import Any

import pycrdt


class Canvas:
    def __init__(self, doc: pycrdt.Doc[Any] | None = None) -> None:
        self.doc = doc or pycrdt.Doc()
        self.agents = self.doc.get("agents", type=pycrdt.Map)
        self.edges = self.doc.get("edges", type=pycrdt.Map)

    def add_agent(
        self,
        name: str,
        x: float = 0.0,
        y: float = 0.0,
        config: dict[str, Any] | None = None,
        agent_id: str | None = None,
    ) -> str:
        agent_id = agent_id or uuid.uuid4().hex
        with self.doc.transaction():
            self.agents[agent_id] = pycrdt.Map(
                {"name": name, "x": float(x), "y": float(y), "config": pycrdt.Map(config or {})}
            )
        return agent_id

    def move_agent(self, agent_id: str, x: float, y: float) -> None:
        agent = self._agent(agent_id)
        with self.doc.transaction():
            agent["x"], agent["y"] = float(x), float(y)

    def rename_agent(self, agent_id: str, name: str) -> None:
        self._agent(agent_id)["name"] = name

    def configure(self, agent_id: str, **config: Any) -> None:
        settings = self._agent(agent_id)["config"]
        with self.doc.transaction():
            for key, value in config.items():
                settings[key] = value

    def remove_agent(self, agent_id: str) -> None:
        with self.doc.transaction():
            self.agents.pop(agent_id, None)
            for edge_id, edge in list(self.edges.items()):
                if agent_id in (edge["source"], edge["target"]):
                    del self.edges[edge_id]

    def connect(self, source: str, target: str, edge_id: str | None = None) -> str:
        self._agent(source)
        self._agent(target)
        edge_id = edge_id or uuid.uuid4().hex
        self.edges[edge_id] = pycrdt.Map({"source": source, "target": target})
        return edge_id

    def disconnect(self, edge_id: str) -> None:
        self.edges.pop(edge_id, None)

    def to_json(self) -> dict[str, Any]:
        return {"agents": self.agents.to_py() or {}, "edges": self.edges.to_py() or {}}

    def load_json(self, data: dict[str, Any]) -> None:
        """Make the canvas equal to ``data`` (as written by to_json), as one change."""
        with self.doc.transaction():
            for agent_id in list(self.agents.keys()):
                if agent_id not in data.get("agents", {}):
                    del self.agents[agent_id]
            for agent_id, agent in data.get("agents", {}).items():
                current = self.agents.get(agent_id)
                if current is None:
                    self.add_agent(
                        agent["name"], agent["x"], agent["y"], agent.get("config"), agent_id
                    )
                    continue
                for key in ("name", "x", "y"):
                    if current[key] != agent[key]:
                        current[key] = agent[key]
                config = current["config"]
                for key in list(config.keys()):
                    if key not in agent.get("config", {}):
                        del config[key]
                for key, value in agent.get("config", {}).items():
                    if config.get(key) != value:
                        config[key] = value
            for edge_id in list(self.edges.keys()):
                if edge_id not in data.get("edges", {}):
                    del self.edges[edge_id]
            for edge_id, edge in data.get("edges", {}).items():
                if edge_id not in self.edges:
                    self.edges[edge_id] = pycrdt.Map(dict(edge))

    def _agent(self, agent_id: str) -> pycrdt.Map[Any]:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise KeyError(f"no agent {agent_id}")
        return agent  # type: ignore[no-any-return]
