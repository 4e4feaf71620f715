"""The links CSV file: which Quivo inquiry each merchant's order belongs to, as operators edit it."""

import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relay.domain.ids import MAX_ID
from relay.domain.rating import MAX_EXTERNAL_ID_CHARS

COLUMNS = ("merchant_id", "external_id", "inquiry_id")
# Optional: the tenant whose merchant the row's is, checked by the importer.
TENANT_COLUMN = "tenant"
# Why a row's merchant may not be linked for the tenant it names (None: it names none), or None.
LinkCheck = Callable[[int, str | None], str | None]

# OWASP's CSV injection advice: a spreadsheet runs a cell starting with one of these as a formula, so the
# export writes such an order id behind a `'`. Quotes already in front are counted in, so the import takes
# exactly one `'` back off and every order id survives the round trip, `'=x` included.
_FORMULA = re.compile(r"'*[=+\-@\t\r]")


@dataclass(frozen=True)
class Link:
    """A merchant's order, by its Bringg external id, belongs to this Quivo customer inquiry."""

    merchant_id: int
    external_id: str
    inquiry_id: int


@dataclass(frozen=True)
class LinkFileProblem:
    """Why one line of a links file was not taken; lines count from 1, the header being line 1."""

    line: int
    reason: str


@dataclass(frozen=True)
class HeaderProblem(LinkFileProblem):
    """The file has no usable header, so none of its rows were read."""


def unchecked(merchant_id: int, tenant: str | None) -> str | None:
    """Every row's link may be saved: no tenant is checked."""
    return None


def parse_links_csv(text: str, check: LinkCheck = unchecked) -> tuple[list[Link], list[LinkFileProblem]]:
    """The links in `text` and the problems with the rows that are not links.

    The header names the columns `merchant_id`, `external_id` and `inquiry_id`, in any order; other columns
    are ignored. Whitespace around names and values is trimmed, a UTF-8 byte order mark is tolerated, and
    blank lines (or rows of empty fields) are skipped. A missing column is one problem on the header's line
    and yields no links. A bad row yields one problem per bad field and never stops the good rows. When a
    (merchant_id, external_id) appears on more than one row, the later row wins. An external_id whose
    `'`s are followed by `=`, `+`, `-`, `@`, a tab or a carriage return loses one `'`: the one
    `links_to_csv` put there so that a spreadsheet shows the cell instead of running it. An optional
    `tenant` column names the row's tenant; `check` refuses a row whose merchant may not be linked so.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    problems: list[LinkFileProblem] = []
    columns: dict[str, int] | None = None
    width = 0
    links: dict[tuple[int, str], Link] = {}
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            problems.append(LinkFileProblem(line, f"unreadable CSV: {error}"))
            continue
        if not any(field.strip() for field in row):
            continue
        if columns is None:
            columns, header_problem = _read_header(row)
            if header_problem is not None:
                return [], [HeaderProblem(line, header_problem)]
            width = len(row)
            continue
        if len(row) != width:
            problems.append(LinkFileProblem(line, f"expected {width} fields, found {len(row)}"))
            continue
        link, reasons = _read_row(row, columns)
        if link is not None:
            named = row[columns[TENANT_COLUMN]].strip() or None if TENANT_COLUMN in columns else None
            if refusal := check(link.merchant_id, named):
                link, reasons = None, [refusal]
        problems.extend(LinkFileProblem(line, reason) for reason in reasons)
        if link is not None:
            links[link.merchant_id, link.external_id] = link
    if columns is None:
        return [], [HeaderProblem(1, f"no header: expected columns {','.join(COLUMNS)}")]
    return list(links.values()), problems


def links_to_csv(links: Iterable[Link], tenant: str | None = None) -> str:
    """A links file that `parse_links_csv` reads back as `links`, safe to open in a spreadsheet; with a
    tenant, its column names it on every row."""
    out = io.StringIO()
    writer = csv.writer(out)
    extra = [] if tenant is None else [tenant]
    writer.writerow([*COLUMNS, *([] if tenant is None else [TENANT_COLUMN])])
    writer.writerows([link.merchant_id, _inert(link.external_id), link.inquiry_id, *extra] for link in links)
    return out.getvalue()


def _inert(external_id: str) -> str:
    return f"'{external_id}" if _FORMULA.match(external_id) else external_id


def external_id_problem(external_id: str) -> str | None:
    """Why `external_id` (trimmed) cannot be a link's order id, without repeating it, or None.

    The same bound as intake's (a longer id never reaches a delivery), no control characters (no real
    order id holds one; they forge terminal output), and encodable as UTF-8 (SQLite refuses lone surrogates).
    """
    if not external_id:
        return "external_id is empty"
    if len(external_id) > MAX_EXTERNAL_ID_CHARS:
        return (
            f"external_id has {len(external_id)} characters, an order id has at most {MAX_EXTERNAL_ID_CHARS}"
        )
    if any(unicodedata.category(char) == "Cc" for char in external_id):
        return "external_id holds control characters"
    # A file read with surrogateescape keeps undecodable bytes as lone surrogates.
    if any(unicodedata.category(char) == "Cs" for char in external_id):
        return "external_id is not valid UTF-8"
    return None


def _read_header(row: list[str]) -> tuple[dict[str, int], str | None]:
    names = [name.strip() for name in row]
    missing = [column for column in COLUMNS if column not in names]
    if missing:
        return {}, f"missing column {', '.join(missing)}: expected columns {','.join(COLUMNS)}"
    known = (*COLUMNS, TENANT_COLUMN)
    doubled = [column for column in known if names.count(column) > 1]
    if doubled:
        return {}, f"column {', '.join(doubled)} appears more than once"
    return {column: names.index(column) for column in known if column in names}, None


def _read_row(row: list[str], columns: dict[str, int]) -> tuple[Link | None, list[str]]:
    merchant_id, merchant_problem = _read_id(row[columns["merchant_id"]], "merchant_id")
    inquiry_id, inquiry_problem = _read_id(row[columns["inquiry_id"]], "inquiry_id")
    external_id, external_problem = _read_external_id(row[columns["external_id"]])
    reasons = [reason for reason in (merchant_problem, external_problem, inquiry_problem) if reason]
    if merchant_id is None or inquiry_id is None or external_id is None:
        return None, reasons
    return Link(merchant_id, external_id, inquiry_id), reasons


def _read_id(field: str, name: str) -> tuple[int | None, str | None]:
    value = field.strip()
    # int() would also take signs, underscores and non-ASCII digits; an id is none of those.
    if not (value.isascii() and value.isdigit()):
        return None, f"{name} must be a positive whole number, found {value!r}"
    significant = value.lstrip("0")
    if not significant:
        return None, f"{name} must be positive, found {value!r}"
    # Checked by length first: int() refuses strings of more than 4300 digits.
    if len(significant) > len(str(MAX_ID)) or int(significant) > MAX_ID:
        return None, f"{name} {value} is beyond the int64 range"
    return int(significant), None


def _read_external_id(field: str) -> tuple[str | None, str | None]:
    value = field.strip()
    if value.startswith("'") and _FORMULA.match(value, 1):
        value = value[1:]  # written so by `links_to_csv`, or by hand to keep a spreadsheet from running it
    problem = external_id_problem(value)
    return (None, problem) if problem else (value, None)
