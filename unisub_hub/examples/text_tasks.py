"""Small binary text classification tasks that can be made offline, deterministically.

Sentiment tasks use the VADER lexicon that the ``vaderSentiment`` package ships; topic tasks
use sentences from the docstrings of Python standard-library modules (real English text
that is labelled by the module family it documents).
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["TASKS", "TextTask", "make_task"]


@dataclass(frozen=True)
class TextTask:
    name: str
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]


@cache
def _lexicon() -> dict[str, float]:
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    words = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha() and len(parts[0]) > 2:
            words[parts[0]] = float(parts[1])
    return words


@cache
def _sentences(modules: tuple[str, ...]) -> tuple[str, ...]:
    found = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        docs = [inspect.getdoc(module) or ""]
        for _, member in inspect.getmembers(module):
            if (inspect.isfunction(member) or inspect.isclass(member)) and getattr(member, "__module__", "").startswith(
                module_name
            ):
                docs.append(inspect.getdoc(member) or "")
        for doc in docs:
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = sentence.split()
                if 5 <= len(words) <= 30 and not sentence.startswith((">>>", "...")):
                    found.append(sentence.lower())
    return tuple(sorted(set(found)))


_REVIEW = [
    "the film was {w}",
    "i found the service {w}",
    "honestly the food tasted {w}",
    "what a {w} experience",
    "the whole trip felt {w}",
    "our new neighbours are {w}",
    "this book is {w}",
    "the concert was {w} tonight",
]
_TOPICS = {
    "topic-net-vs-text": (
        ("http.client", "socket", "urllib.request", "email.message", "smtplib"),
        ("string", "textwrap", "re", "difflib"),
    ),
    "topic-data-vs-os": (("json", "csv", "sqlite3", "decimal"), ("os", "shutil", "pathlib", "subprocess")),
    "topic-async-vs-math": (
        ("asyncio", "threading", "concurrent.futures", "queue"),
        ("math", "statistics", "fractions", "random"),
    ),
    "topic-test-vs-logging": (("unittest", "doctest"), ("logging", "logging.handlers")),
    "topic-time-vs-collections": (("datetime", "calendar", "time"), ("collections", "itertools", "functools", "heapq")),
    "topic-archive-vs-xml": (
        ("zipfile", "tarfile", "gzip", "bz2"),
        ("xml.dom.minidom", "xml.etree.ElementTree", "html.parser"),
    ),
    "topic-crypto-vs-files": (("hashlib", "hmac", "secrets", "ssl"), ("io", "tempfile", "glob", "fnmatch")),
}


def _sentiment(rng: random.Random, kind: str, count: int) -> list[tuple[str, int]]:
    lexicon = _lexicon()
    positive = sorted(w for w, s in lexicon.items() if s >= 1.5)
    negative = sorted(w for w, s in lexicon.items() if s <= -1.5)
    strong = sorted(w for w, s in lexicon.items() if abs(s) >= 2.4)
    mild = sorted(w for w, s in lexicon.items() if 0.6 <= abs(s) <= 1.3)
    out = []
    for _ in range(count):
        label = rng.randrange(2)
        template = rng.choice(_REVIEW)
        if kind == "sentiment":
            out.append((template.format(w=rng.choice(positive if label else negative)), label))
        elif kind == "negation":
            negated = rng.randrange(2)
            word = rng.choice(positive if label ^ negated else negative)
            text = template.format(w=("not " if negated else "") + word)
            out.append((text, label))
        else:  # intensity: strong vs mild, whatever the sign
            out.append((template.format(w=rng.choice(strong if label else mild)), label))
    return out


def _topic(rng: random.Random, name: str, count: int) -> list[tuple[str, int]]:
    first, second = (_sentences(group) for group in _TOPICS[name])
    return [(rng.choice(second if (label := rng.randrange(2)) else first), label) for _ in range(count)]


TASKS = ("sentiment", "sentiment-negation", "sentiment-intensity", *_TOPICS)
"""Ten binary tasks: three built on the VADER lexicon, seven on standard-library docstrings."""


def make_task(name: str, *, train: int = 480, test: int = 240, seed: int = 0) -> TextTask:
    """Examples of task ``name``: lists of ``(text, label)`` with labels 0/1."""
    rng = random.Random(f"{name}-{seed}")
    if name.startswith("sentiment"):
        kind = {"sentiment": "sentiment", "sentiment-negation": "negation", "sentiment-intensity": "intensity"}[name]
        examples = _sentiment(rng, kind, train + test)
    elif name in _TOPICS:
        examples = _topic(rng, name, train + test)
    else:
        raise KeyError(f"unknown example task {name!r}; choose from {', '.join(TASKS)}")
    return TextTask(name, examples[:train], examples[train:])
