"""Tool use: pick the right tool from a short list and call it as one line of JSON.

The prompt lists one to three tools with compact schemas, then a request::

    Tools: get_weather(city, unit: celsius|fahrenheit); set_timer(minutes: int)
    Request: Set a timer for 15 minutes.

and the response is ``{"name": "set_timer", "arguments": {"minutes": 15}}``. Slot values are copied
verbatim from the request, so the task is choosing the tool and routing words into arguments.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from bar_model.domains.base import Domain, Example
from bar_model.domains.registry import register

CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Rome", "Delhi", "Quito", "Berlin", "Seoul"]
EMAILS = [f"{n}@mail.com" for n in ("ann", "bob", "eva", "liam", "mia", "noah", "zoe", "omar")]
SUBJECTS = ["lunch", "rent", "report", "party", "trip", "budget", "meeting", "invoice"]
RESTAURANTS = ["Luigi", "Sakura", "Olive", "Ember", "Lotus", "Saffron", "Harbor", "Maple"]
ARTISTS = ["Adele", "Queen", "Abba", "Muse", "Drake", "Shakira", "Coldplay", "Beyonce"]


@dataclass(frozen=True)
class Param:
    """One argument: ``values`` are what requests draw from; ``enum`` marks values the schema lists."""

    name: str
    values: tuple[Any, ...]
    enum: bool = False

    @property
    def is_int(self) -> bool:
        return isinstance(self.values[0], int)

    def schema(self) -> str:
        if self.enum:
            return f"{self.name}: {'|'.join(self.values)}"
        return f"{self.name}: int" if self.is_int else self.name

    def accepts(self, value: Any) -> bool:
        if self.is_int:
            return type(value) is int  # not bool, not 4.0
        if not isinstance(value, str):
            return False
        return value in self.values if self.enum else True


@dataclass(frozen=True)
class Tool:
    name: str
    params: tuple[Param, ...]
    requests: tuple[str, ...]  # request templates, formatted with the argument values

    def schema(self) -> str:
        return f"{self.name}({', '.join(p.schema() for p in self.params)})"

    def accepts(self, arguments: dict[str, Any]) -> bool:
        """Exactly the schema's keys (all required, no extras), each with a valid value."""
        if set(arguments) != {p.name for p in self.params}:
            return False
        return all(p.accepts(arguments[p.name]) for p in self.params)


TOOLS = {
    t.name: t
    for t in (
        Tool(
            "get_weather",
            (Param("city", tuple(CITIES)), Param("unit", ("celsius", "fahrenheit"), enum=True)),
            ("What is the weather in {city} in {unit}?", "Tell me the {city} weather in {unit}."),
        ),
        Tool(
            "send_email",
            (Param("to", tuple(EMAILS)), Param("subject", tuple(SUBJECTS))),
            ("Email {to} with the subject {subject}.", "Send {to} an email titled {subject}."),
        ),
        Tool(
            "set_timer",
            (Param("minutes", tuple(range(1, 91))),),
            ("Set a timer for {minutes} minutes.", "Start a {minutes} minute timer."),
        ),
        Tool(
            "book_table",
            (Param("restaurant", tuple(RESTAURANTS)), Param("people", tuple(range(1, 13)))),
            ("Book a table at {restaurant} for {people} people.", "Reserve {restaurant} for {people}."),
        ),
        Tool(
            "play_music",
            (Param("artist", tuple(ARTISTS)), Param("volume", ("low", "medium", "high"), enum=True)),
            ("Play {artist} at {volume} volume.", "Put on some {artist}, volume {volume}."),
        ),
    )
}


def parse_call(text: str) -> dict[str, Any] | None:
    """The call in ``text`` if it is a JSON object with exactly ``name`` (str) and ``arguments`` (object)."""
    if not isinstance(text, str):
        return None
    try:
        call = json.loads(text.strip())
    except Exception:  # JSONDecodeError, RecursionError on deep nesting, int-size limits...
        return None
    if not isinstance(call, dict) or set(call) != {"name", "arguments"}:
        return None
    if not isinstance(call["name"], str) or not isinstance(call["arguments"], dict):
        return None
    return call


class ToolUseDomain(Domain):
    """Function calling with a choice of tools and a strict JSON format."""

    name = "tool_use"
    description = "Choose one of the listed tools and answer with a single-line JSON function call."
    max_new_tokens = 64

    def sample(self, rng: random.Random) -> Example:
        tool = rng.choice(list(TOOLS.values()))
        others = [t for t in TOOLS.values() if t is not tool]
        shown = [tool, *rng.sample(others, rng.randint(0, 2))]
        rng.shuffle(shown)
        arguments = {p.name: rng.choice(p.values) for p in tool.params}
        request = rng.choice(tool.requests).format(**arguments)
        prompt = f"Tools: {'; '.join(t.schema() for t in shown)}\nRequest: {request}"
        call = json.dumps({"name": tool.name, "arguments": arguments})
        return Example(prompt, call, call)

    def score(self, example: Example, completion: str) -> float:
        return 1.0 if self.reward(example, completion) == 1.0 else 0.0

    def reward(self, example: Example, completion: str) -> float:
        """1.0 right call; 0.2 right tool, wrong arguments; 0.1 a well-formed call to another tool."""
        call = parse_call(completion)
        if call is None:
            return 0.0
        expected = json.loads(example.answer)
        if call["name"] != expected["name"]:
            return 0.1
        tool = TOOLS[expected["name"]]
        if tool.accepts(call["arguments"]) and call["arguments"] == expected["arguments"]:
            return 1.0
        return 0.2


register(ToolUseDomain())
