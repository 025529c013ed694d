"""What every synthetic domain provides: data for each training stage and an exact scorer.

A domain only has to say how to draw one random problem (``sample``) and how to score a
completion (``score``). The base class turns that into deterministic, seeded data sets for
every stage, with a held-out split that can never overlap the training data: a problem
belongs to the eval split iff a hash of its prompt says so, whoever draws it.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

from protocol.errors import BarFedError

EVAL_BUCKETS = 10  # one prompt in ten (by hash) is held out for evaluation


@dataclass(frozen=True)
class Example:
    """One problem: the user's turn, a correct assistant turn, and what the scorer checks."""

    prompt: str
    response: str
    answer: str
    domain: str = ""  # the domain that drew it (set by `Domain`), so mixtures can score it


class Domain(ABC):
    """A source of verifiable problems in one capability."""

    name: str
    description: str
    max_new_tokens: int = 48  # enough for any correct response in this domain

    @abstractmethod
    def sample(self, rng: random.Random) -> Example:
        """Draw one random problem (no split logic here; the base class handles it)."""

    @abstractmethod
    def score(self, example: Example, completion: str) -> float:
        """1.0 if ``completion`` (the assistant's text) solves ``example``, else 0.0. Never raises."""

    def reward(self, example: Example, completion: str) -> float:
        """RL reward; the exact score unless a domain adds partial credit for format."""
        return self.score(example, completion)

    def document(self, rng: random.Random) -> str:
        """One mid-training text: domain prose, not a chat. Defaults to a worked problem."""
        example = self._draw("train", rng)
        return f"{example.prompt}\n{example.response}"

    # -- splits -----------------------------------------------------------------------

    def split_of(self, prompt: str) -> str:
        digest = hashlib.sha256(f"{self.name}\0{prompt}".encode()).digest()
        return "eval" if digest[0] % EVAL_BUCKETS == 0 else "train"

    def _draw(self, split: str, rng: random.Random, max_tries: int = 1000) -> Example:
        for _ in range(max_tries):
            example = self.sample(rng)
            if self.split_of(example.prompt) == split:
                return replace(example, domain=self.name)
        raise BarFedError(
            "DOMAIN_EXHAUSTED",
            f"domain {self.name!r} could not draw a {split} problem in {max_tries} tries; "
            "its problem space is too small for this split.",
        )

    def _rng(self, purpose: str, seed: int) -> random.Random:
        return random.Random(f"{self.name}/{purpose}/{seed}")

    def mid_texts(self, n: int, seed: int = 0) -> list[str]:
        rng = self._rng("mid", seed)
        return [self.document(rng) for _ in range(n)]

    def sft(self, n: int, seed: int = 0) -> list[Example]:
        rng = self._rng("sft", seed)
        return [self._draw("train", rng) for _ in range(n)]

    def rl(self, n: int, seed: int = 0) -> list[Example]:
        rng = self._rng("rl", seed)
        return [self._draw("train", rng) for _ in range(n)]

    def eval_set(self, n: int, seed: int = 0) -> list[Example]:
        """``n`` distinct held-out problems (distinct prompts)."""
        rng = self._rng("eval", seed)
        seen: dict[str, Example] = {}
        tries = 0
        while len(seen) < n:
            example = self._draw("eval", rng)
            seen.setdefault(example.prompt, example)
            tries += 1
            if tries > 50 * n + 1000:
                raise BarFedError(
                    "DOMAIN_EXHAUSTED",
                    f"domain {self.name!r} has fewer than {n} distinct held-out problems; ask for fewer.",
                )
        return list(seen.values())
