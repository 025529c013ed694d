"""Parametric domains: many small, distinct, learnable tasks, so federations can have many experts.

Three families, all answered as ``Result: <value>`` and all named ``p-*``:

- string transformations of a random 3-6 letter lowercase string (``p-reverse``, ``p-caesar-2``...);
  the prompt names the transformation: ``Reverse the letters: qzto`` -> ``Result: otzq``.
- unit conversions of a compound quantity with small integers (``p-h-to-min``...):
  ``Convert 2 h 15 min to min.`` -> ``Result: 135``. A second, smaller unit in the question gives a
  problem space big enough for 300+ distinct held-out prompts without large numbers.
- fact lookups (``p-facts-00``...): each domain owns a deterministic table of 40 invented entities in an
  invented world, each with one attribute (``In Velmar, what is the colour of the zorp?`` ->
  ``Result: teal``). Lookup is memorisation, so what is held out is the *phrasing*: every prompt is one
  of 100 templates (10 openers x 10 question forms) applied to an entity, and the base class's hash
  split holds out about one (entity, template) pair in ten. Each fact therefore appears in training
  under other phrasings, and evaluation asks it in a phrasing not seen for that entity.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from bar_model.domains.base import Domain, Example
from bar_model.domains.registry import register

_NAMES: list[str] = []


def parametric_names() -> list[str]:
    """Names of every parametric domain, in definition order."""
    return list(_NAMES)


def result_of(completion: str) -> str | None:
    """The value on a completion's first line if that line is ``Result: <value>``, else None."""
    if not isinstance(completion, str):
        return None
    line = completion.strip().split("\n", 1)[0]
    if not line.startswith("Result:"):
        return None
    return line[len("Result:") :].strip()


class ParametricDomain(Domain):
    """Shared format and scorer: the response is ``Result: <answer>`` and must match exactly."""

    max_new_tokens = 24

    def __init__(self, name: str, description: str, draw: Callable[[random.Random], tuple[str, str]]):
        self.name, self.description, self._draw_problem = name, description, draw

    def sample(self, rng: random.Random) -> Example:
        prompt, answer = self._draw_problem(rng)
        return Example(prompt, f"Result: {answer}", answer)

    def score(self, example: Example, completion: str) -> float:
        return 1.0 if result_of(completion) == example.answer else 0.0


def _add(domain: Domain) -> None:
    _NAMES.append(domain.name)
    register(domain)


# -- string transformations --------------------------------------------------------------------

VOWELS = set("aeiou")


def _caesar(word: str, k: int) -> str:
    return "".join(chr((ord(ch) - 97 + k) % 26 + 97) for ch in word)


STRING_TASKS: dict[str, tuple[str, Callable[[str], str]]] = {
    "p-reverse": ("Reverse the letters", lambda w: w[::-1]),
    "p-upper": ("Uppercase the letters", str.upper),
    "p-sort": ("Sort the letters", lambda w: "".join(sorted(w))),
    "p-double": ("Double each letter", lambda w: "".join(ch * 2 for ch in w)),
    "p-devowel": ("Remove the vowels", lambda w: "".join(ch for ch in w if ch not in VOWELS)),
    "p-last": ("Give the last letter", lambda w: w[-1]),
    "p-first-two": ("Give the first two letters", lambda w: w[:2]),
    "p-swap-ends": ("Swap the first and last letters", lambda w: w[-1] + w[1:-1] + w[0]),
    "p-length": ("Count the letters", lambda w: str(len(w))),
    "p-rotate": ("Rotate the letters left by one", lambda w: w[1:] + w[0]),
    "p-mirror": ("Mirror the word", lambda w: w + w[::-1]),
    "p-alt-caps": (
        "Capitalise every other letter",
        lambda w: "".join(ch.upper() if i % 2 == 0 else ch for i, ch in enumerate(w)),
    ),
    **{f"p-caesar-{k}": (f"Caesar shift by {k}", lambda w, k=k: _caesar(w, k)) for k in range(1, 6)},
}


def _string_problem(task: str, fn: Callable[[str], str]) -> Callable[[random.Random], tuple[str, str]]:
    def draw(rng: random.Random) -> tuple[str, str]:
        while True:
            word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 6)))
            answer = fn(word)
            if answer:  # e.g. an all-vowel word has nothing left without vowels
                return f"{task}: {word}", answer

    return draw


for _name, (_task, _fn) in STRING_TASKS.items():
    _add(ParametricDomain(_name, f"String transformation: {_task.lower()}.", _string_problem(_task, _fn)))


# -- unit conversions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """``a big b small`` -> small units; ``big``/``small`` are (singular, plural)."""

    name: str
    big: tuple[str, str]
    small: tuple[str, str]
    factor: int
    max_big: int  # chosen so that max_big * factor * 4 templates >= ~7000 prompts


CONVERSIONS = [
    Conversion("p-km-to-m", ("km", "km"), ("m", "m"), 1000, 20),
    Conversion("p-m-to-cm", ("m", "m"), ("cm", "cm"), 100, 20),
    Conversion("p-cm-to-mm", ("cm", "cm"), ("mm", "mm"), 10, 199),
    Conversion("p-kg-to-g", ("kg", "kg"), ("g", "g"), 1000, 20),
    Conversion("p-l-to-ml", ("l", "l"), ("ml", "ml"), 1000, 20),
    Conversion("p-h-to-min", ("h", "h"), ("min", "min"), 60, 30),
    Conversion("p-min-to-s", ("min", "min"), ("s", "s"), 60, 30),
    Conversion("p-day-to-h", ("day", "days"), ("hour", "hours"), 24, 90),
    Conversion("p-week-to-day", ("week", "weeks"), ("day", "days"), 7, 300),
    Conversion("p-year-to-month", ("year", "years"), ("month", "months"), 12, 150),
    Conversion("p-dozen-to-egg", ("dozen", "dozen"), ("egg", "eggs"), 12, 150),
    Conversion("p-ft-to-in", ("foot", "feet"), ("inch", "inches"), 12, 150),
    Conversion("p-usd-to-cents", ("dollar", "dollars"), ("cent", "cents"), 100, 20),
]
CONVERSION_TEMPLATES = [
    "Convert {q} to {small}.",
    "How many {small} is {q}?",
    "Express {q} in {small}.",
    "{q} equals how many {small}?",
]


def _unit(pair: tuple[str, str], n: int) -> str:
    return f"{n} {pair[0] if n == 1 else pair[1]}"


def _conversion_problem(conv: Conversion) -> Callable[[random.Random], tuple[str, str]]:
    def draw(rng: random.Random) -> tuple[str, str]:
        a, b = rng.randint(1, conv.max_big), rng.randrange(conv.factor)
        quantity = _unit(conv.big, a) + (f" {_unit(conv.small, b)}" if b else "")
        prompt = rng.choice(CONVERSION_TEMPLATES).format(q=quantity, small=conv.small[1])
        return prompt[0].upper() + prompt[1:], str(a * conv.factor + b)

    return draw


for _conv in CONVERSIONS:
    _add(
        ParametricDomain(
            _conv.name,
            f"Unit conversion: {_conv.big[1]} and {_conv.small[1]} to {_conv.small[1]}.",
            _conversion_problem(_conv),
        )
    )


# -- fact lookups ------------------------------------------------------------------------------

ATTRIBUTES: list[tuple[str, list[str]]] = [
    ("colour", ["teal", "red", "blue", "gold", "grey", "pink", "green", "white"]),
    ("food", ["moss", "fish", "seeds", "honey", "bark", "berries", "cheese", "rice"]),
    ("sound", ["hum", "click", "chirp", "roar", "hiss", "buzz", "howl", "beep"]),
    ("shape", ["round", "square", "flat", "long", "spiky", "curly", "star", "oval"]),
    ("home", ["caves", "trees", "lakes", "hills", "sand", "clouds", "ice", "reeds"]),
    ("metal", ["iron", "tin", "copper", "silver", "gold", "zinc", "lead", "nickel"]),
    ("mood", ["calm", "grumpy", "shy", "bold", "sleepy", "cheerful", "nervous", "proud"]),
    ("number of legs", ["2", "4", "6", "8", "10", "12"]),
]
WORLDS = ["Velmar", "Ostra", "Quenby", "Drall", "Pimora", "Suvel", "Hexley", "Torbin", "Ylva", "Marrow"]
FACT_OPENERS = [
    "{w} facts: ", "In {w}, ", "About {w}: ", "{w} lore: ", "{w} quiz: ",
    "From the {w} table: ", "{w} question: ", "Recall {w}: ", "Lookup in {w}: ", "Tell me about {w}: ",
]  # fmt: skip
FACT_FORMS = [
    "what is the {a} of the {e}?", "what {a} does the {e} have?", "the {e} has which {a}?",
    "name the {a} of the {e}.", "tell me the {e}'s {a}.", "which {a} belongs to the {e}?",
    "give the {a} of the {e}.", "what is the {e}'s {a}?", "state the {a} of the {e}.",
    "the {a} of the {e} is what?",
]  # fmt: skip
ENTITIES_PER_TABLE = 40
_ONSETS = ["b", "bl", "br", "d", "dr", "f", "fl", "g", "gr", "k", "kl", "m", "n", "p", "pl", "s", "sk",
           "sn", "t", "tr", "v", "z", "zw", "j"]  # fmt: skip
_NUCLEI = ["a", "e", "i", "o", "u", "oo", "ee", "ai"]
_CODAS = ["b", "k", "m", "n", "p", "rp", "rk", "sh", "x", "z", "ll", "ft", "g", "t"]


def fact_table(index: int, used: set[str] | None = None) -> dict[str, str]:
    """The deterministic entity -> attribute-value table of ``p-facts-{index:02d}``."""
    rng = random.Random(f"p-facts/{index}")
    values = ATTRIBUTES[index % len(ATTRIBUTES)][1]
    used = set() if used is None else used
    table: dict[str, str] = {}
    while len(table) < ENTITIES_PER_TABLE:
        entity = rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS)
        if entity not in used:
            used.add(entity)
            table[entity] = rng.choice(values)
    return table


class FactsDomain(ParametricDomain):
    """Lookups in one invented world's table, asked in many phrasings."""

    def __init__(self, index: int, used: set[str]):
        self.world, self.attribute = WORLDS[index], ATTRIBUTES[index % len(ATTRIBUTES)][0]
        self.table = fact_table(index, used)
        self._entities = sorted(self.table)
        super().__init__(
            f"p-facts-{index:02d}",
            f"Facts about {self.world}: the {self.attribute} of 40 invented creatures.",
            self._problem,
        )

    def _problem(self, rng: random.Random) -> tuple[str, str]:
        entity = rng.choice(self._entities)
        opener = rng.choice(FACT_OPENERS).format(w=self.world)
        form = rng.choice(FACT_FORMS).format(a=self.attribute, e=entity)
        return opener + form, self.table[entity]

    def document(self, rng: random.Random) -> str:
        """A plain statement of one fact, so mid-training can teach the table."""
        entity = rng.choice(self._entities)
        return f"In {self.world}, the {self.attribute} of the {entity} is {self.table[entity]}."


_used_entities: set[str] = set()  # entity names are unique across tables, so tables never conflict
for _index in range(len(WORLDS)):
    _add(FactsDomain(_index, _used_entities))
