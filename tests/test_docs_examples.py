"""docs/operations.md's example values mean what it says: the pattern in each quoting, the reference tags."""

import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from relay.domain.rating import Rating
from relay.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
FENCE = re.compile(r"^\s*```(\S*)\s*$")


def pattern_lines() -> dict[str, list[str]]:
    """The lines that set RELAY_INQUIRY_ID_PATTERN, by the language of the block they are shown in."""
    found: dict[str, list[str]] = {}
    language: str | None = None
    for raw in DOC.read_text().splitlines():
        fence = FENCE.match(raw)
        if fence:
            language = fence[1] if language is None else None
        elif language is not None and raw.strip().startswith("RELAY_INQUIRY_ID_PATTERN="):
            found.setdefault(language, []).append(raw.strip())
    return found


def as_a_shell_reads_it(line: str) -> str:
    done = subprocess.run(
        ["sh", "-c", f'{line}\nprintf %s "$RELAY_INQUIRY_ID_PATTERN"'],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_the_pattern_shown_for_a_shell_and_for_docker_is_one_pattern():
    shown = pattern_lines()
    for_shell = [as_a_shell_reads_it(line) for line in shown["sh"]]
    for_docker = [line.partition("=")[2] for line in shown["ini"]]  # --env-file: the value verbatim

    assert set(for_shell) == set(for_docker) == {r"^QI-(\d+)$"}
    pattern = Settings(_env_file=None, relay_inquiry_id_pattern=for_docker[0]).relay_inquiry_id_pattern
    found = pattern.search("QI-90210") if pattern else None
    assert found is not None and found[1] == "90210"


def test_the_reference_tags_the_doc_shows_are_those_the_relay_writes():
    original = Rating(merchant_id=1, rating_id=3461, stars=4)
    updated = original.model_copy(update={"updated_at": datetime(2024, 5, 2, 10, 15, tzinfo=UTC)})
    text = DOC.read_text()

    assert original.reference_tag == "[bringg:1:3461]"
    assert updated.reference_tag in text
    assert "`[bringg:<merchant_id>:<rating_id>]`" in text
    assert "`[bringg:<merchant_id>:<rating_id>:<version>]`" in text
