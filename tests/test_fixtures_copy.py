"""The copies of the vendors' payloads in tests/fixtures stay byte for byte what ../shared/fixtures holds."""

from pathlib import Path

import pytest

from tests.conftest import SHARED_FIXTURES

COPIES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="../shared/fixtures is not beside this clone")
def test_copies_match_the_shared_fixtures():
    shared = sorted(
        path.relative_to(SHARED_FIXTURES) for path in SHARED_FIXTURES.rglob("*") if path.is_file()
    )
    copied = sorted(
        path.relative_to(COPIES) for path in COPIES.rglob("*") if path.is_file() and path.suffix != ".md"
    )

    assert copied == shared
    for name in shared:
        assert (COPIES / name).read_bytes() == (SHARED_FIXTURES / name).read_bytes(), name
