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

__all__ = ["ALL_TASKS", "TASKS", "TextTask", "label_words", "make_task", "pretraining_text"]


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
_GROUPS = {
    "network": ("http.client", "socket", "urllib.request", "email.message", "smtplib"),
    "text": ("string", "textwrap", "re", "difflib"),
    "data": ("json", "csv", "sqlite3", "decimal"),
    "system": ("os", "shutil", "pathlib", "subprocess"),
    "async": ("asyncio", "threading", "concurrent.futures", "queue"),
    "math": ("math", "statistics", "fractions", "random"),
    "testing": ("unittest", "doctest"),
    "logging": ("logging", "logging.handlers"),
    "time": ("datetime", "calendar", "time"),
    "collections": ("collections", "itertools", "functools", "heapq"),
    "archive": ("zipfile", "tarfile", "gzip", "bz2"),
    "xml": ("xml.dom.minidom", "xml.etree.ElementTree", "html.parser"),
    "crypto": ("hashlib", "hmac", "secrets", "ssl"),
    "files": ("io", "tempfile", "glob", "fnmatch"),
}
"""Standard-library module families; a topic task tells two of them apart by their docstrings."""

_TOPICS = {
    "topic-net-vs-text": ("network", "text"),
    "topic-data-vs-os": ("data", "system"),
    "topic-async-vs-math": ("async", "math"),
    "topic-test-vs-logging": ("testing", "logging"),
    "topic-time-vs-collections": ("time", "collections"),
    "topic-archive-vs-xml": ("archive", "xml"),
    "topic-crypto-vs-files": ("crypto", "files"),
    # The wider collection's pairs: each family meets new partners.
    "topic-net-vs-data": ("network", "data"),
    "topic-text-vs-os": ("text", "system"),
    "topic-async-vs-test": ("async", "testing"),
    "topic-math-vs-time": ("math", "time"),
    "topic-collections-vs-archive": ("collections", "archive"),
    "topic-xml-vs-crypto": ("xml", "crypto"),
    "topic-files-vs-logging": ("files", "logging"),
    "topic-net-vs-math": ("network", "math"),
    "topic-data-vs-xml": ("data", "xml"),
    "topic-os-vs-crypto": ("system", "crypto"),
    "topic-text-vs-time": ("text", "time"),
    "topic-async-vs-collections": ("async", "collections"),
    "topic-test-vs-archive": ("testing", "archive"),
    "topic-files-vs-net": ("files", "network"),
}
_SENTIMENT_KINDS = {"sentiment": "sentiment", "sentiment-negation": "negation", "sentiment-intensity": "intensity"}
_SENTIMENT_LABELS = {
    "sentiment": ("negative", "positive"),
    "negation": ("negative", "positive"),
    "intensity": ("mild", "strong"),
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
    first, second = (_sentences(_GROUPS[group]) for group in _TOPICS[name])
    return [(rng.choice(second if (label := rng.randrange(2)) else first), label) for _ in range(count)]


def pretraining_text() -> list[str]:
    """What the example causal LM is pretrained on, shuffled: every family's docstring sentences,
    each followed by ``-- <module>``, and generated reviews followed by ``-- good`` or ``-- bad``.

    A real LM learns what a sentence is about from its pretraining; here the tag teaches it which
    module a sentence documents and which way a review leans, never the words a task answers with
    (``network``, ``positive``...): a generation task's adapter maps that knowledge to its answer.
    """
    lines = [f"{s} -- {module}" for group in _GROUPS.values() for module in group for s in _sentences((module,))]
    rng = random.Random("pretraining")
    for kind in ("sentiment", "negation"):
        lines += [f"{text} -- {'good' if label else 'bad'}" for text, label in _sentiment(rng, kind, 1500)]
    lines += [text for text, _ in _sentiment(rng, "intensity", 1500)]
    rng.shuffle(lines)
    return lines


TASKS = ("sentiment", "sentiment-negation", "sentiment-intensity", *list(_TOPICS)[:7])
"""The demo's ten binary tasks: three built on the VADER lexicon, seven on standard-library docstrings."""

ALL_TASKS = (*TASKS, *list(_TOPICS)[7:])
"""Twenty-four tasks: the demo's ten and fourteen more topic pairs (for collections that need
enough members to hold each one out in turn)."""


def label_words(name: str) -> tuple[str, str]:
    """The words that name task ``name``'s labels 0 and 1 (a generation task answers with them)."""
    if name in _SENTIMENT_KINDS:
        return _SENTIMENT_LABELS[_SENTIMENT_KINDS[name]]
    if name in _TOPICS:
        return _TOPICS[name]
    raise KeyError(f"unknown example task {name!r}; choose from {', '.join(ALL_TASKS)}")


def make_task(name: str, *, train: int = 480, test: int = 240, seed: int = 0) -> TextTask:
    """Examples of task ``name``: lists of ``(text, label)`` with labels 0/1."""
    rng = random.Random(f"{name}-{seed}")
    if name in _SENTIMENT_KINDS:
        examples = _sentiment(rng, _SENTIMENT_KINDS[name], train + test)
    elif name in _TOPICS:
        examples = _topic(rng, name, train + test)
    else:
        raise KeyError(f"unknown example task {name!r}; choose from {', '.join(ALL_TASKS)}")
    return TextTask(name, examples[:train], examples[train:])
