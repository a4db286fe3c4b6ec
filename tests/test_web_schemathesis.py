"""schemathesis over the HTTP API (issue 14): every operation, every check, in process against a real store,
as the admin, as a namespace-limited token and without a token; 0 failures. Examples are bounded so the
run stays short on two cores.

One setting: a schema-valid request may be answered 422 (``positive_data_acceptance`` expects it among its
statuses). The API refuses, with 422 and the error model, what a schema cannot state: an edit the safety check
refuses, a date that is not ISO, text with control characters, a malformed namespace name.
"""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install 'memedit[web]')")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (the test extra)")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from memedit import Edit, EditStore  # noqa: E402
from memedit.policy import NamespacePolicy, Policy  # noqa: E402
from memedit.web.app import create_app  # noqa: E402
from memedit.web.auth import TokenFile  # noqa: E402

EXAMPLES = 15
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory, embedder):
    path = tmp_path_factory.mktemp("schemathesis")
    store = EditStore(path / "s.db", embedder=embedder)
    tokens, admin = TokenFile.open(path / "s.tokens.json")
    limited = tokens.create("acme-writer", namespaces=["acme/*"], write=True)
    for ns in ("default", "acme", "acme/u1"):
        store.add(Edit.text(f"The CEO of Initech in {ns} is Bill Lumbergh.", namespace=ns))
        store.add(Edit.fact("Globex", "The CEO of {} is", "Hank Scorpio", namespace=ns), status="pending")
    policy = Policy(store, default=NamespacePolicy(max_edits=1000, window_s=60))
    app = create_app(store, tokens=tokens, policy=policy)
    yield {"app": app, "headers": {"admin": {"Authorization": f"Bearer {admin}"},
                                   "limited": {"Authorization": f"Bearer {limited}"}, "anonymous": {}}}
    store.close()


@pytest.fixture(scope="module")
def operations(served):
    """Every operation of the app's own schema (loaded in process, over ASGI) but the OpenAI-compatible ``/v1`` ones.

    Those follow OpenAI's contract, not this API's, and answer 503 without a model; the official ``openai`` client
    and LangChain's ``ChatOpenAI`` check them over HTTP (tests/test_openai_endpoint.py).
    """
    from schemathesis.config import SchemathesisConfig

    schema = schemathesis.openapi.from_asgi("/openapi.json", served["app"], config=SchemathesisConfig.from_str(CONFIG))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sum(op.path.startswith("/v1/") for op in operations) == 2
    return [op for op in operations if not op.path.startswith("/v1/")]


def _contract(operations: list, headers: dict[str, str]) -> None:
    """Hypothesis examples of each operation, each checked with every schemathesis check.

    (Driven by hand rather than through ``schema.parametrize``: schemathesis' pytest plugin does not run under
    this pytest version.)
    """
    assert len(operations) == 15
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(headers=headers)

        check()


@pytest.mark.parametrize("who", ["admin", "limited", "anonymous"])
def test_the_api_keeps_its_contract(operations, served, who):
    _contract(operations, served["headers"][who])
