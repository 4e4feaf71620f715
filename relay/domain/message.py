"""The Quivo side of a rating: its number on Quivo's scale and the message text that carries the tag."""

import functools
from collections.abc import Callable
from string import Formatter

from relay.domain.rating import MAX_EXTERNAL_ID_CHARS, Rating

TEMPLATE_FIELDS: tuple[str, ...] = (
    "stars",
    "comment",
    "reasons",
    "external_id",
    "title",
    "merchant_id",
    "rating_id",
)
# Quivo documents no limit on `ratingMessage`; a message is always shorter than this.
MAX_MESSAGE_CHARS = 4000
# Reasons are short picks from the merchant's list; the bound only stops a runaway list.
MAX_REASONS_CHARS = 500
# External id and title come from the merchant's order system, so they get a bound of their own.
MAX_ORDER_FIELD_CHARS = MAX_EXTERNAL_ID_CHARS
ELLIPSIS = "…"
# Marks every line that begins with text from Bringg, so no comment can pass for a line of ours: the tag
# `[bringg:...]`, or a template line such as `Customer rating: 5/5 stars`.
QUOTE = "> "
# The fields whose text comes from the consumer or the merchant rather than from the relay.
_USER_FIELDS = frozenset({"comment", "reasons", "external_id", "title"})
# The fields whose value is text, so may be empty (the others are numbers).
_TEXT_FIELDS = ("comment", "reasons", "external_id", "title")
# How a field's value is marked with QUOTE: never (the relay's own numbers); only its lines after the first
# (user text after some of the template's text on its line); or also its first line, when nothing but
# blanks stands before it on the line.
_PLAIN, _AFTER_TEXT, _MAY_START_LINE = 0, 1, 2

# One sample per field, of the type it renders with, to learn whether a format spec would work.
_SAMPLES: dict[str, int | str] = {
    "stars": 5,
    "comment": "text",
    "reasons": "text",
    "external_id": "text",
    "title": "text",
    "merchant_id": 1,
    "rating_id": 1,
}
_CONVERSIONS: dict[str, Callable[[object], str]] = {"s": str, "r": repr, "a": ascii}

# (literal text, field name or None, format spec, conversion) as string.Formatter.parse yields them.
_Piece = tuple[str, str | None, str, str | None]
# A template line ready to fill in: its fields, then its pieces, each with how its value is marked.
_Line = tuple[frozenset[str], tuple[tuple[str, str | None, str, str | None, int], ...]]


def quivo_rating(stars: int, low: float = 1.0, high: float = 5.0) -> float:
    """Map 1..5 stars linearly onto Quivo's low..high: 1 star is `low`, 5 stars is exactly `high`."""
    if not 1 <= stars <= 5:
        raise ValueError(f"stars must be 1..5, not {stars}")
    share = (stars - 1) / 4
    # Weighting both ends (rather than low + span * share) lands exactly on `high` for 5 stars.
    return low * (1 - share) + high * share


def template_problems(template: str) -> list[str]:
    """What is wrong with a message template, one line per problem naming the field; empty when it is fine."""
    problems: list[str] = []
    try:
        pieces = _pieces(template)
    except ValueError as error:
        return [f"bad format syntax: {error} (write {{{{ or }}}} for a literal brace)"]
    known = ", ".join(TEMPLATE_FIELDS)
    for _, field, spec, conversion in pieces:
        if field is None:
            continue
        placeholder = _placeholder(field, spec, conversion)
        if field == "" or field.isdigit():
            problems.append(f"positional field {placeholder}: name a field, one of {known}")
        elif field not in _SAMPLES:
            problems.append(f"unknown field {placeholder}: use one of {known}")
        elif conversion is not None and conversion not in _CONVERSIONS:
            problems.append(f"field {placeholder}: unknown conversion !{conversion} (use !s, !r or !a)")
        elif "{" in spec or "}" in spec:
            problems.append(f"field {placeholder}: nested fields in a format spec are not supported")
        else:
            try:
                _format(_SAMPLES[field], spec, conversion)
            except ValueError as error:
                problems.append(f"field {placeholder}: format spec does not work for {field}: {error}")
    return problems


def render_message(rating: Rating, template: str, *, max_comment_chars: int = 1000) -> str:
    """The Quivo rating message: the template filled in, lines left empty dropped, the reference tag last.

    A template line is dropped when every field on it has an empty value (no comment, no reasons); a
    line without fields stays. User text is only ever a value, never a format string, so braces in a
    comment stay literal. The comment keeps its line breaks; every line that begins with user text
    (each of the comment's after its first, and any at the start of a template line) is marked with
    QUOTE, so the tag and the template's own lines are the only unmarked ones. The template must have no
    `template_problems`.
    """
    values = _field_values(rating, max_comment_chars)
    # Only text can be empty: the numbers are always shown.
    empty = {field for field in _TEXT_FIELDS if not values[field]}
    lines: list[str] = []
    for fields, pieces in _template_lines(template):
        if fields and fields <= empty:
            continue
        rendered = ""
        for literal, field, spec, conversion, kind in pieces:
            rendered += literal
            if field is None:
                continue
            value = values[field]
            # Without a spec or conversion, format() is str(): the common case, at a fraction of the cost.
            text = _format(value, spec, conversion) if spec or conversion else str(value)
            if kind is _PLAIN or (kind is _AFTER_TEXT and "\n" not in text):
                rendered += text
            else:
                rendered += _quoted(text, starts_line=kind is _MAY_START_LINE and not rendered.strip())
        lines.append(rendered.rstrip())
    body = "\n".join(lines).strip()
    tag = rating.reference_tag
    # The tag is never cut: the body gives way so the whole stays under MAX_MESSAGE_CHARS.
    body = _shorten(body, MAX_MESSAGE_CHARS - 1 - len(tag) - 1)
    return f"{body}\n{tag}" if body else tag


def ends_with_reference_tag(message: str, tag: str) -> bool:
    """Whether a message read back from Quivo is the one this tag names (the tag is always its last line)."""
    # Only the end counts: a customer's comment may quote some other rating's tag.
    return message.rstrip().endswith(tag)


def _field_values(rating: Rating, max_comment_chars: int) -> dict[str, int | str]:
    # A reason, id or title stays on its own template line: inner line breaks and runs of spaces collapse.
    # Spelled inline, as is _shorten's test: this runs once a delivery, and each call cost more than its work.
    reasons = ", ".join([text for text in [" ".join(reason.split()) for reason in rating.reasons] if text])
    comment = _lines(rating.comment)
    external_id = " ".join(rating.external_id.split()) if rating.external_id else ""
    title = " ".join(rating.task_title.split()) if rating.task_title else ""
    return {
        "stars": rating.stars,
        "comment": comment if len(comment) <= max_comment_chars else _shorten(comment, max_comment_chars),
        "reasons": reasons if len(reasons) <= MAX_REASONS_CHARS else _shorten(reasons, MAX_REASONS_CHARS),
        "external_id": external_id
        if len(external_id) <= MAX_ORDER_FIELD_CHARS
        else _shorten(external_id, MAX_ORDER_FIELD_CHARS),
        "title": title if len(title) <= MAX_ORDER_FIELD_CHARS else _shorten(title, MAX_ORDER_FIELD_CHARS),
        "merchant_id": rating.merchant_id,
        "rating_id": rating.rating_id,
    }


@functools.lru_cache(maxsize=8)
def _template_lines(template: str) -> tuple[_Line, ...]:
    """The template's pieces grouped by the line they stand on (line breaks live in the literal text)."""
    # Cached: one template serves every delivery, and parsing it cost more than filling it in.
    lines: list[list[_Piece]] = [[]]
    for literal, field, spec, conversion in _pieces(template):
        *whole_lines, rest = literal.split("\n")
        for text in whole_lines:
            lines[-1].append((text, None, "", None))
            lines.append([])
        lines[-1].append((rest, field, spec, conversion))
    return tuple(
        (frozenset(field for _, field, _, _ in line if field is not None), _kinds(line)) for line in lines
    )


def _kinds(line: list[_Piece]) -> tuple[tuple[str, str | None, str, str | None, int], ...]:
    """A line's pieces, each with how its value is marked with QUOTE (see _PLAIN and its neighbours)."""
    pieces = []
    after_text = False
    for literal, field, spec, conversion in line:
        # Text of the template's own before a value on its line: the value never starts that line.
        after_text = after_text or bool(literal.strip())
        kind = _PLAIN if field not in _USER_FIELDS else _AFTER_TEXT if after_text else _MAY_START_LINE
        pieces.append((literal, field, spec, conversion, kind))
    return tuple(pieces)


def _pieces(template: str) -> list[_Piece]:
    return [
        (literal, field, spec or "", conversion)
        for literal, field, spec, conversion in Formatter().parse(template)
    ]


def _format(value: int | str, spec: str, conversion: str | None) -> str:
    converted = _CONVERSIONS[conversion](value) if conversion else value
    return format(converted, spec)


def _quoted(text: str, *, starts_line: bool) -> str:
    if "\n" not in text:  # one line, the common case
        return QUOTE + text if starts_line and text.strip() else text
    first, *rest = text.split("\n")
    marked = [QUOTE + first if starts_line and first.strip() else first]
    marked += [(QUOTE + line).rstrip() for line in rest]
    return "\n".join(marked)


def _lines(text: str | None) -> str:
    if not text:
        return ""
    # Every kind of line break (\r, \u2028, ...) becomes \n, which the message is made of, so each is marked.
    return "\n".join([line.rstrip() for line in text.strip().splitlines()])


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ELLIPSIS), 0)].rstrip() + ELLIPSIS


def _placeholder(field: str, spec: str, conversion: str | None) -> str:
    return "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
