"""The error trees drawn in each layer's errors module match the code, and every error describes itself.

Each layer draws its tree in the docstring of its errors module (``config/errors.py``,
``store/errors.py``, ``agent/errors.py``, ``channels/errors.py``). A class that is raised but not drawn,
or a drawn class that no longer exists, fails here.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import pytest

import agent.errors
import channels.errors
import config.errors
from agent.errors import ProviderError, TurnTimedOut, VisionRefused
from agent.events import TurnFailed
from agent.media import MediaError
from config.errors import HeroError, describe_error
from store import ConversationBusy, InvalidInput, MessageTooLarge, NotFound, StoreError, StoreUnavailable

TREES: dict[str, ModuleType] = {
    "config": config.errors,
    # the store's errors module by name: its face is what outsiders import, its docstring is the tree
    "store": importlib.import_module("store.errors"),
    "agent": agent.errors,
    "channels": channels.errors,
}
#: a class name drawn in a tree: a CamelCase word after ``+--``, or first on a line of the drawing
_DRAWN = re.compile(r"^\s*(?:[|+\- ]*\+-- |\s{4})(?:[a-z]+\.)?([A-Z][A-Za-z]+)\b", re.M)


def _drawing(module: ModuleType) -> str:
    doc = module.__doc__ or ""
    return doc.split("::", 1)[1].split("\n\n", 2)[1] if "::" in doc else ""


def _error_classes() -> list[type[HeroError]]:
    for package in ("config", "store", "agent", "channels"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            importlib.import_module(info.name)
    found: list[type[HeroError]] = []
    todo: list[type[HeroError]] = [HeroError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__.split(".")[0] in TREES]


def test_every_error_class_is_drawn_in_its_layers_tree() -> None:
    for cls in _error_classes():
        layer = cls.__module__.split(".")[0]
        drawn = set(_DRAWN.findall(_drawing(TREES[layer])))
        assert cls.__name__ in drawn, f"{cls.__module__}.{cls.__name__} is missing from {layer}/errors.py"


@pytest.mark.parametrize("layer", sorted(TREES))
def test_every_drawn_class_exists(layer: str) -> None:
    names = {cls.__name__ for cls in _error_classes()}
    drawn = set(_DRAWN.findall(_drawing(TREES[layer])))
    assert drawn, layer
    assert drawn <= names, f"drawn in {layer}/errors.py but not in the code: {sorted(drawn - names)}"


def test_every_error_class_has_a_code() -> None:
    for cls in _error_classes():
        assert re.fullmatch(r"[a-z_]+", cls.code), cls


def test_one_description_per_error() -> None:
    """The code and the one sentence a user is shown come from the error itself."""
    assert describe_error(NotFound("conversation", "zz9")) == ("not_found", "No conversation with that id.")
    assert describe_error(StoreUnavailable("OSIS store unreachable at http://10.0.0.7:8900")) == (
        "store_unavailable",
        "The store is unavailable; try again shortly.",
    )
    assert describe_error(StoreError("sqlite3.OperationalError: disk I/O error")) == (
        "store_failed",
        "The store failed; try again shortly.",
    )
    assert describe_error(InvalidInput("The message is empty.")) == ("invalid_input", "The message is empty.")
    assert describe_error(MessageTooLarge("too long")) == ("message_too_large", "too long")
    assert describe_error(ConversationBusy())[0] == "busy"
    assert describe_error(MediaError("too_many", "Too many images.")) == ("too_many", "Too many images.")
    assert describe_error(ProviderError("")) == ("provider_error", "The model provider failed.")
    assert describe_error(KeyError("a bug")) == ("internal", "Something went wrong on our side.")
    assert TurnFailed.of(TurnTimedOut(2.5), "c1") == TurnFailed(
        "deadline", "The turn took longer than 2.5 s and was stopped.", "c1"
    )
    refused = VisionRefused("gpt-x", ProviderError("bad image", status=400))
    assert refused.code == "vision_unsupported" and "gpt-x" in refused.user_message
