"""schemathesis against ``/openapi.json`` of a live server: no 5xx, and every response conforms.

The whole stack (FakeOpenAI, store, agent, WebChannel) runs in a blocking portal's event loop in a
thread, because schemathesis calls the API synchronously from the test thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.result import Ok

from tests.channels.web.conftest import ALICE, Web, serve_web, web_settings
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(FakeOpenAI()) as fake,
        portal.wrap_async_context_manager(serve_web(web_settings(tmp, fake.base_url))) as web,
    ):
        yield web


#: ``positive_data_acceptance`` is left out: an opaque paging cursor that we did not issue is rightly a
#: 400, and no JSON Schema can say "a cursor from a previous page"; every other check runs
#: examples per operation and mode: ~22 operations x (positive + negative) stays well under a minute
EXAMPLES = 10


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(live_web: Web, mode: GenerationMode) -> None:
    # schemathesis' own pytest plugin (``from_fixture``) does not run on pytest 9 (it reads
    # ``Function._nodeid``), so each operation's strategy is driven by hypothesis directly
    schema = schemathesis.openapi.from_url(f"{live_web.base_url}/openapi.json")
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) >= 20
    for operation in operations:
        raw = operation.definition.raw
        if mode == GenerationMode.NEGATIVE and not (raw.get("parameters") or raw.get("requestBody")):
            continue  # nothing to make invalid (/healthz, /metrics, ...)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        )
        def check(case: schemathesis.Case[Any]) -> None:
            # the document declares bearer auth, so schemathesis puts a made-up token in every case
            # and leaves the header out only to test the refusal: swap in a real token when present
            if case.headers and "Authorization" in case.headers:
                case.headers["Authorization"] = ALICE["Authorization"]
            case.call_and_validate(timeout=20, excluded_checks=[positive_data_acceptance])

        check()
