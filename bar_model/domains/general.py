"""General: simple instruction following, and the plain English the base model is pretrained on.

This is the anchor's post-training mix and the only text the base model sees, so it deliberately uses
none of the other domains' formats (no ``Answer:``, ``Output:``, ``Result:``, ``Expr:``, JSON calls or
refusals): a model trained only on it should score near zero everywhere else.
"""

from __future__ import annotations

import random

from bar_model.domains.base import Domain, Example
from bar_model.domains.registry import register

WORDS = [
    "cat", "dog", "sun", "tree", "book", "fish", "bird", "milk", "rain", "star", "cake", "ship", "road",
    "lamp", "door", "hat", "shoe", "cup", "frog", "moon", "bell", "leaf", "rock", "kite", "boat", "bear",
    "cow", "egg", "box", "pen", "bus", "car", "hill", "lake", "nest", "rose", "sock", "toy", "wind", "corn",
    "duck", "goat", "king", "map", "owl", "pig", "ring", "sand", "tent", "web", "apple", "chair", "house",
    "river", "smile", "bread", "cloud", "grass", "horse", "light", "music", "paper", "plant", "snow",
    "stone", "table", "train", "water", "happy", "green", "quiet", "small", "hello", "today", "sweet",
]  # fmt: skip
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "light": "dark",
    "old": "new", "open": "closed", "full": "empty", "early": "late", "high": "low", "hard": "soft",
    "long": "short", "wet": "dry", "loud": "quiet", "near": "far", "rich": "poor", "strong": "weak",
    "thick": "thin", "clean": "dirty", "first": "last", "left": "right", "day": "night", "in": "out",
    "yes": "no", "win": "lose", "push": "pull", "give": "take", "good": "bad", "true": "false",
}  # fmt: skip
OPPOSITES.update({v: k for k, v in list(OPPOSITES.items())})

# Story vocabulary for pretraining text.
NAMES = ["Tom", "Ana", "Sam", "Mia", "Leo", "Eva", "Max", "Zoe", "Ben", "Ivy", "Lily", "Omar"]
ANIMALS = ["dog", "cat", "bird", "frog", "duck", "fox", "horse", "bear", "goat", "rabbit"]
ADJECTIVES = ["little", "big", "happy", "sleepy", "brown", "old", "young", "funny", "tiny", "brave"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "pink", "orange"]
THINGS = ["ball", "box", "kite", "hat", "book", "cup", "boat", "stick", "apple", "drum"]
PLACES = ["park", "garden", "forest", "house", "school", "river", "field", "shop", "beach", "barn"]
FEELINGS = ["happy", "sad", "tired", "excited", "proud", "calm", "hungry", "surprised"]
FOODS = ["bread", "soup", "rice", "cake", "cheese", "jam", "fish", "pie"]
TIMES = ["morning", "evening", "day", "night", "week", "summer", "winter"]


def _norm(text: str) -> str:
    return " ".join(text.split())


def _words(rng: random.Random, lo: int, hi: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]


def _task(rng: random.Random) -> tuple[str, str, str]:
    """One instruction as (prompt, answer, the same fact as a prose sentence for pretraining)."""
    kind = rng.randrange(5)
    if kind == 0:
        word, n = rng.choice(WORDS), rng.randint(2, 5)
        answer = " ".join([word] * n)
        return f"Repeat the word {word} {n} times.", answer, f"The word {word} said {n} times is {answer}."
    if kind == 1:
        word = rng.choice(WORDS)
        return (
            f"Write {word} in capital letters.",
            word.upper(),
            f"In capital letters, {word} is written {word.upper()}.",
        )
    if kind == 2:
        words = _words(rng, 3, 6)
        text = " ".join(words)
        return (
            f"What is the first word of: {text}",
            words[0],
            f'The first word of "{text}" is {words[0]}.',
        )
    if kind == 3:
        words = _words(rng, 2, 7)
        text = " ".join(words)
        return f"Count the words: {text}", str(len(words)), f'There are {len(words)} words in "{text}".'
    word = rng.choice(sorted(OPPOSITES))
    return f"Say the opposite of {word}.", OPPOSITES[word], f"The opposite of {word} is {OPPOSITES[word]}."


def _story_sentence(rng: random.Random) -> str:
    name, animal, adj = rng.choice(NAMES), rng.choice(ANIMALS), rng.choice(ADJECTIVES)
    colour, thing, place = rng.choice(COLOURS), rng.choice(THINGS), rng.choice(PLACES)
    return rng.choice(
        [
            f"The {adj} {animal} saw a {colour} {thing} in the {place}.",
            f"{name} went to the {place} with a {colour} {thing}.",
            f"It was {rng.choice(FEELINGS)}.",
            f"{name} was {rng.choice(FEELINGS)} after the {rng.choice(TIMES)}.",
            f"{name} likes {rng.choice(FOODS)} and eats it every {rng.choice(TIMES)}.",
            f"The {animal} ran to the {place} to find the {thing}.",
            f"{name} and the {adj} {animal} played with a {thing} all {rng.choice(TIMES)}.",
            f"One {rng.choice(TIMES)}, {name} found a {adj} {animal} near the {place}.",
        ]
    )


class GeneralDomain(Domain):
    """Tiny instructions with exact answers; its documents are the base model's pretraining text."""

    name = "general"
    description = "Simple instruction following: repeat, capitalise, first word, count words, opposites."
    max_new_tokens = 32

    def sample(self, rng: random.Random) -> Example:
        prompt, answer, _ = _task(rng)
        return Example(prompt, answer, answer)

    def score(self, example: Example, completion: str) -> float:
        if not isinstance(completion, str) or len(completion) > 1000:
            return 0.0
        return 1.0 if _norm(completion) == _norm(example.answer) else 0.0

    def document(self, rng: random.Random) -> str:
        """One to four sentences: mostly a little story, sometimes a worked instruction as prose."""
        sentences = [_task(rng)[2] if rng.random() < 0.3 else _story_sentence(rng) for _ in range(rng.randint(1, 4))]
        return " ".join(sentences)


register(GeneralDomain())
