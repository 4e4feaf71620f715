"""Links: the CSV file operators edit, and importing one into the store."""

import csv
import io
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.domain.ids import MAX_ID
from relay.domain.rating import MAX_EXTERNAL_ID_CHARS
from relay.linkfile import HeaderProblem, Link, LinkFileProblem, links_to_csv, parse_links_csv
from relay.store.api import Store
from relay.store.operations import import_links_file
from tests.processes import run_relay
from tests.test_store_contract import accept, settle, state_of

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HEADER = "merchant_id,external_id,inquiry_id\n"


# The file


def test_good_file_gives_every_link_and_no_problems() -> None:
    links, problems = parse_links_csv(HEADER + "7,ORD-1,101\n7,ORD-2,102\n8,ORD-1,201\n")

    assert links == [Link(7, "ORD-1", 101), Link(7, "ORD-2", 102), Link(8, "ORD-1", 201)]
    assert problems == []


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("x,ORD-1,101", "merchant_id"),
        ("0,ORD-1,101", "merchant_id"),
        ("-7,ORD-1,101", "merchant_id"),
        ("+7,ORD-1,101", "merchant_id"),
        ("1_0,ORD-1,101", "merchant_id"),
        ("٣,ORD-1,101", "merchant_id"),
        (f"{MAX_ID + 1},ORD-1,101", "merchant_id"),
        ("7,ORD-1,", "inquiry_id"),
        ("7,ORD-1,1.5", "inquiry_id"),
        ("7,ORD-1,000", "inquiry_id"),
        (f"7,ORD-1,{'9' * 5000}", "inquiry_id"),
        ("7,,101", "external_id"),
        ("7,   ,101", "external_id"),
        ("7,ORD-1", "fields"),
        ("7,ORD-1,101,extra", "fields"),
    ],
)
def test_bad_row_is_a_problem_on_its_line_naming_the_field(row: str, field: str) -> None:
    links, problems = parse_links_csv(HEADER + "7,ORD-0,100\n" + row + "\n7,ORD-2,102\n")

    assert links == [Link(7, "ORD-0", 100), Link(7, "ORD-2", 102)]
    assert [problem.line for problem in problems] == [3]
    assert field in problems[0].reason


def test_each_bad_field_of_a_row_is_its_own_problem() -> None:
    _, problems = parse_links_csv(HEADER + "0,,-1\n")

    assert [problem.line for problem in problems] == [2, 2, 2]
    assert [problem.reason.split()[0] for problem in problems] == ["merchant_id", "external_id", "inquiry_id"]


def test_line_numbers_count_blank_lines_and_lines_inside_quoted_fields() -> None:
    text = HEADER + '\n7,"ORD\n1",101\n\n   \n,,\nx,ORD-2,102\n7,ORD-3,103\n'

    links, problems = parse_links_csv(text)

    assert links == [Link(7, "ORD-3", 103)]
    assert problems == [
        LinkFileProblem(3, "external_id holds control characters"),
        LinkFileProblem(8, "merchant_id must be a positive whole number, found 'x'"),
    ]


def test_undecodable_bytes_in_an_external_id_are_that_rows_problem() -> None:
    text = (HEADER + "7,caf\xe9,101\n7,ORD-2,102\n").encode("latin-1").decode("utf-8", "surrogateescape")

    links, problems = parse_links_csv(text)

    assert links == [Link(7, "ORD-2", 102)]
    assert [problem.line for problem in problems] == [2]
    assert "UTF-8" in problems[0].reason


@pytest.mark.parametrize(
    "header", ["merchant_id,external_id", "merchant,external_id,inquiry_id", "inquiry_id", "7,ORD-0,100"]
)
def test_missing_column_is_one_problem_on_line_one_and_no_links(header: str) -> None:
    links, problems = parse_links_csv(header + "\n7,ORD-1,101\n8,ORD-2,102\n")

    assert links == []
    assert len(problems) == 1
    assert isinstance(problems[0], HeaderProblem) and problems[0].line == 1
    assert "column" in problems[0].reason


def test_column_named_twice_is_one_problem_and_no_links() -> None:
    links, problems = parse_links_csv("merchant_id,external_id,inquiry_id,inquiry_id\n7,ORD-1,101,102\n")

    assert links == []
    assert problems == [HeaderProblem(1, "column inquiry_id appears more than once")]


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff", " , ,\n"])
def test_file_without_a_header_is_one_problem_on_line_one(text: str) -> None:
    links, problems = parse_links_csv(text)

    assert links == []
    assert [problem.line for problem in problems] == [1]
    assert isinstance(problems[0], HeaderProblem) and "no header" in problems[0].reason


def test_columns_in_any_order_with_extras_and_whitespace() -> None:
    text = " inquiry_id , note ,merchant_id,  external_id\n 101 , call back , 7 ,  ORD-1  \n"

    assert parse_links_csv(text) == ([Link(7, "ORD-1", 101)], [])


def test_byte_order_mark_and_windows_line_ends_are_tolerated() -> None:
    text = "\ufeffmerchant_id,external_id,inquiry_id\r\n7,ORD-1,101\r\n"

    assert parse_links_csv(text) == ([Link(7, "ORD-1", 101)], [])


def test_later_row_wins_for_the_same_order() -> None:
    links, problems = parse_links_csv(HEADER + "7,ORD-1,101\n8,ORD-1,201\n7,ORD-1,109\n")

    assert sorted(links, key=lambda link: link.merchant_id) == [Link(7, "ORD-1", 109), Link(8, "ORD-1", 201)]
    assert problems == []


def test_largest_int64_ids_are_kept() -> None:
    assert parse_links_csv(HEADER + f"{MAX_ID},ORD-1,{MAX_ID}\n") == ([Link(MAX_ID, "ORD-1", MAX_ID)], [])


IDS = st.integers(min_value=1, max_value=MAX_ID)
# Import refuses control characters (and lone surrogates) in an order id, so no link holds one.
ORDER_ID_CHARACTERS = st.characters(exclude_categories=("Cc", "Cs"))
EXTERNAL_IDS = st.one_of(
    st.text(ORDER_ID_CHARACTERS, min_size=1, max_size=MAX_EXTERNAL_ID_CHARS),
    # Order ids a spreadsheet would run as formulas, with and without quotes already in front.
    st.tuples(st.sampled_from(["", "'", "''"]), st.sampled_from("=+-@"), st.text(ORDER_ID_CHARACTERS)).map(
        "".join
    ),
).filter(lambda text: text == text.strip() and len(text) <= MAX_EXTERNAL_ID_CHARS)


@given(
    st.lists(
        st.builds(Link, IDS, EXTERNAL_IDS, IDS), unique_by=lambda link: (link.merchant_id, link.external_id)
    )
)
def test_exported_links_read_back_the_same(links: list[Link]) -> None:
    assert parse_links_csv(links_to_csv(links)) == (links, [])


# As an operator might type them, the third quoted by hand so that a spreadsheet would not run it.
BY_HAND = ['=HYPERLINK("http://x")', "+1", "'=quoted by hand", "-2+3", "@SUM(A1)", "'plain", "ORD-1"]
STORED = ['=HYPERLINK("http://x")', "+1", "=quoted by hand", "-2+3", "@SUM(A1)", "'plain", "ORD-1"]


def test_exported_cells_never_start_a_formula_and_import_reads_them_back(tmp_path: Path) -> None:
    typed = io.StringIO()
    csv.writer(typed).writerows([["merchant_id", "external_id", "inquiry_id"], *[[1, x, 7] for x in BY_HAND]])
    (tmp_path / "typed.csv").write_text(typed.getvalue())
    first = {"DATABASE_URL": "sqlite:///first.db"}
    second = {"DATABASE_URL": "sqlite:///second.db"}

    imported = run_relay("links", "import", "typed.csv", env=first, cwd=tmp_path)
    exported = run_relay("links", "export", env=first, cwd=tmp_path)
    (tmp_path / "exported.csv").write_text(exported.stdout)
    reimported = run_relay("links", "import", "exported.csv", env=second, cwd=tmp_path)
    exported_again = run_relay("links", "export", env=second, cwd=tmp_path)

    assert [imported.returncode, exported.returncode, reimported.returncode] == [0, 0, 0], imported.stderr
    cells = sorted(row[1] for row in csv.reader(io.StringIO(exported.stdout)) if row[0] != "merchant_id")
    assert cells == sorted(
        ['\'=HYPERLINK("http://x")', "'+1", "'=quoted by hand", "'-2+3", "'@SUM(A1)", "'plain", "ORD-1"]
    )
    with sqlite3.connect(tmp_path / "second.db") as conn:
        assert sorted(row[0] for row in conn.execute("SELECT external_id FROM links")) == sorted(STORED)
    assert exported_again.stdout == exported.stdout


# Importing a file into the store (saving, waking and listing links are the store contract's)


async def unmatched_delivery(store: Store, external_id: str) -> int:
    delivery = await accept(store, external_id=external_id, at=NOW)
    assert await settle(store, delivery, "unmatched", now=NOW) == "unmatched"
    return delivery


async def test_import_saves_good_rows_reports_bad_ones_and_tells_progress(
    store: Store, tmp_path: Path
) -> None:
    waiting = await unmatched_delivery(store, "ORD-3")
    path = tmp_path / "links.csv"
    rows = ["7,ORD-1,101", "7,ORD-2,abc", "7,ORD-3,103", ",ORD-4,104", "7,ORD-5,105", "7,ORD-6"]
    path.write_text("\ufeff" + HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    heard: list[int] = []

    result = await import_links_file(store, path, now=NOW, batch_size=2, progress=heard.append)

    assert (result.saved, result.woken) == (3, 1)
    assert [problem.line for problem in result.problems] == [3, 5, 7]
    assert "inquiry_id" in result.problems[0].reason
    assert "merchant_id" in result.problems[1].reason
    assert heard == [2, 3]
    assert [link.external_id for link in await store.list_links()] == ["ORD-1", "ORD-3", "ORD-5"]
    assert await state_of(store, waiting) == "pending"


async def test_import_of_a_file_without_the_columns_saves_nothing(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "links.csv"
    path.write_text("merchant,order,inquiry\n7,ORD-1,101\n", encoding="utf-8")
    heard: list[int] = []

    result = await import_links_file(store, path, now=NOW, progress=heard.append)

    assert (result.saved, result.woken, heard) == (0, 0, [])
    assert [problem.line for problem in result.problems] == [1]
    assert await store.list_links() == []


def test_links_import_refuses_an_order_id_too_long_or_with_control_characters(tmp_path: Path) -> None:
    rows = [[1, "x" * 7000, 7], [1, "ORD\x001", 7], [1, "ORD\x1b[2J", 7], [1, "x" * 200, 8], [1, "ORD-1", 9]]
    typed = io.StringIO()
    csv.writer(typed).writerows([["merchant_id", "external_id", "inquiry_id"], *rows])
    (tmp_path / "typed.csv").write_text(typed.getvalue())

    imported = run_relay("links", "import", "typed.csv", env={"DATABASE_URL": "sqlite:///l.db"}, cwd=tmp_path)

    assert "x" * 201 not in imported.stdout + imported.stderr
    assert "external_id has 7000 characters, an order id has at most 200" in imported.stdout + imported.stderr
    assert (imported.stdout + imported.stderr).count("external_id holds control characters") == 2
    with sqlite3.connect(tmp_path / "l.db") as conn:
        assert sorted(row[0] for row in conn.execute("SELECT inquiry_id FROM links")) == [8, 9]
