"""The words of a text search, the same for every engine and for the Store's search fallback."""

from __future__ import annotations

import re

_WORD_RE = re.compile(r"\w+", re.UNICODE)
MAX_SEARCH_WORDS = 32
#: words too common to say anything about relevance; dropped from queries (unless nothing else is left)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "s",
        "she",
        "so",
        "t",
        "that",
        "the",
        "their",
        "them",
        "there",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def search_words(text: str) -> list[str]:
    """The distinct lower-cased words of ``text`` that say something (stopwords dropped unless nothing
    else is left), at most ``MAX_SEARCH_WORDS``."""
    words = list(dict.fromkeys(w.lower() for w in _WORD_RE.findall(text)))
    return ([w for w in words if w not in STOPWORDS] or words)[:MAX_SEARCH_WORDS]
