"""The link actions shared by the admin API, the CLI and the console: the CLI logs as the API does."""

import json

import pytest

from tests.conftest import BACKENDS
from tests.test_admin import seed
from tests.test_cli_ops import relay as run
from tests.test_cli_ops import store as store  # the fixture

pytestmark = pytest.mark.backends(*BACKENDS)


def test_relay_links_import_logs_admin_links_imported_on_stderr_as_the_admin_api_does(store):
    seed(store, state="unmatched", merchant_id=1, external_id="ORD-7")
    (store.folder / "links.csv").write_text("merchant_id,external_id,inquiry_id\n1,ORD-7,701\n2,ORD-8,x\n")

    imported = run(store, "links", "import", "links.csv")

    assert imported.stdout == "saved 1 links, woke 1 unmatched deliveries, 1 bad rows\n"
    [logged] = [json.loads(line) for line in imported.stderr.splitlines() if line.startswith("{")]
    assert (logged["event"], logged["saved"], logged["woken"], logged["problems"]) == (
        "admin.links_imported",
        1,
        1,
        1,
    )
