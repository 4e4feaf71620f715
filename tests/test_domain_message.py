"""The Quivo rating number and the rating message: scale mapping, template checks, rendering."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.domain.message import (
    MAX_MESSAGE_CHARS,
    TEMPLATE_FIELDS,
    ends_with_reference_tag,
    quivo_rating,
    render_message,
    template_problems,
)
from relay.domain.rating import Rating
from relay.settings import DEFAULT_MESSAGE_TEMPLATE

# What settings hand the worker: `\n` in the environment value becomes a real line break.
TEMPLATE = DEFAULT_MESSAGE_TEMPLATE.replace("\\n", "\n")


def fixture_rating(**changes: object) -> Rating:
    """The rating of Bringg's documented `rating_submitted` example."""
    fields: dict[str, object] = {
        "merchant_id": 1,
        "rating_id": 3452,
        "stars": 4,
        "comment": None,
        "reasons": ("Driver friendlinesss", "Ease of use"),
        "task_id": 345623,
        "external_id": "12443523",
        "task_title": "pickup",
        "task_status": 1,
        "created_at": datetime(2022, 7, 20, 12, 1, 30, 191000, tzinfo=UTC),
    }
    return Rating.model_validate(fields | changes)


def test_quivo_rating_default_scale_keeps_the_stars() -> None:
    assert [quivo_rating(stars) for stars in range(1, 6)] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_quivo_rating_maps_onto_another_scale() -> None:
    assert [quivo_rating(stars, 0.0, 10.0) for stars in range(1, 6)] == [0.0, 2.5, 5.0, 7.5, 10.0]


@pytest.mark.parametrize("stars", [0, 6, -1])
def test_quivo_rating_refuses_stars_outside_one_to_five(stars: int) -> None:
    with pytest.raises(ValueError, match="stars"):
        quivo_rating(stars, 1.0, 5.0)


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(low=finite, span=st.floats(min_value=1e-3, max_value=1e6))
def test_quivo_rating_is_monotonic_and_hits_both_ends(low: float, span: float) -> None:
    high = low + span
    values = [quivo_rating(stars, low, high) for stars in range(1, 6)]
    assert values[0] == low
    assert values[-1] == high
    assert values == sorted(values)


def test_default_template_renders_the_fixture_rating_for_a_person() -> None:
    assert render_message(fixture_rating(), TEMPLATE) == (
        "Customer rating: 4/5 stars\n"
        "Reasons: Driver friendlinesss, Ease of use\n"
        "Order: 12443523\n"
        "Task: pickup\n"
        "[bringg:1:3452]"
    )


def test_comment_line_appears_when_there_is_a_comment() -> None:
    message = render_message(fixture_rating(comment="  Lovely driver.  "), TEMPLATE)
    assert "\nComment: Lovely driver.\n" in message


def test_updated_rating_ends_with_its_versioned_tag() -> None:
    updated = fixture_rating(updated_at=datetime(2022, 7, 21, 8, 0, tzinfo=UTC))
    assert render_message(updated, TEMPLATE).endswith("\n[bringg:1:3452:20220721T080000.000000Z]")


def test_lines_whose_fields_are_all_empty_are_dropped() -> None:
    rating = fixture_rating(reasons=(), external_id=None, task_title="pickup")
    assert render_message(rating, TEMPLATE) == "Customer rating: 4/5 stars\nTask: pickup\n[bringg:1:3452]"


def test_line_without_fields_stays() -> None:
    template = "Thanks from Bringg\n{comment}\n\n{stars} stars"
    assert render_message(fixture_rating(), template) == "Thanks from Bringg\n\n4 stars\n[bringg:1:3452]"


def test_empty_and_blank_reasons_are_skipped() -> None:
    rating = fixture_rating(reasons=("", "  ", "Late", "\n"))
    assert "Reasons: Late\n" in render_message(rating, TEMPLATE)


def test_reasons_and_order_fields_stay_on_their_line() -> None:
    rating = fixture_rating(reasons=("Too\nlate",), task_title="pick\n up")
    message = render_message(rating, TEMPLATE)
    assert "Reasons: Too late\n" in message
    assert "Task: pick up\n" in message


def test_a_comment_keeps_its_line_breaks_but_cannot_forge_a_line_of_ours() -> None:
    comment = "Great\n[bringg:1:3452]\r\nCustomer rating: 5/5 stars\u2028Order: FAKE\n\n  bye  "
    message = render_message(fixture_rating(stars=2, comment=comment), TEMPLATE)

    assert message == (
        "Customer rating: 2/5 stars\n"
        "Comment: Great\n"
        "> [bringg:1:3452]\n"
        "> Customer rating: 5/5 stars\n"
        "> Order: FAKE\n"
        ">\n"
        ">   bye\n"
        "Reasons: Driver friendlinesss, Ease of use\n"
        "Order: 12443523\n"
        "Task: pickup\n"
        "[bringg:1:3452]"
    )


def test_user_text_that_starts_a_template_line_is_marked_too() -> None:
    rating = fixture_rating(comment="[bringg:1:3452]", task_title="4 stars")
    message = render_message(rating, "{comment}\n{title}\n{stars} stars {title}")

    assert message == "> [bringg:1:3452]\n> 4 stars\n4 stars 4 stars\n[bringg:1:3452]"


def test_braces_in_user_text_stay_literal() -> None:
    rating = fixture_rating(comment="{stars} {0} {comment!r:>99} }{", reasons=("{reasons}",))
    message = render_message(rating, TEMPLATE)
    assert "Comment: {stars} {0} {comment!r:>99} }{\n" in message
    assert "Reasons: {reasons}\n" in message


def test_long_comment_is_cut_with_an_ellipsis() -> None:
    message = render_message(fixture_rating(comment="x" * 50), "{comment}", max_comment_chars=10)
    assert message == "> " + "x" * 9 + "…\n[bringg:1:3452]"


def test_comment_at_the_limit_is_kept_whole() -> None:
    message = render_message(fixture_rating(comment="x" * 10), "{comment}", max_comment_chars=10)
    assert message == "> " + "x" * 10 + "\n[bringg:1:3452]"


def test_repeated_fields_are_cut_to_keep_the_message_under_the_limit() -> None:
    message = render_message(fixture_rating(comment="y" * 1000), "{comment}" * 10)
    assert len(message) < MAX_MESSAGE_CHARS
    assert message.endswith("…\n[bringg:1:3452]")


def test_format_specs_and_conversions_apply() -> None:
    message = render_message(fixture_rating(comment="hi"), "{stars:03d} {comment!r} #{rating_id:,}")
    assert message == "004 'hi' #3,452\n[bringg:1:3452]"


def test_template_with_nothing_left_renders_only_the_tag() -> None:
    assert render_message(fixture_rating(), "{comment}") == "[bringg:1:3452]"


# Huge text built by repetition: hypothesis draws long strings slowly, and only the length matters here.
huge_text = st.builds(
    lambda unit, times: unit * times,
    st.text(alphabet="{}!:x\n …", min_size=1, max_size=8),
    st.integers(1, 5000),
)
user_text = st.one_of(st.text(), huge_text)


@given(
    comment=st.one_of(st.none(), user_text),
    reasons=st.lists(user_text, max_size=5),
    external_id=st.one_of(st.none(), user_text),
    title=st.one_of(st.none(), user_text),
    stars=st.integers(min_value=1, max_value=5),
)
def test_message_always_ends_with_the_tag_and_stays_under_the_limit(
    comment: str | None, reasons: list[str], external_id: str | None, title: str | None, stars: int
) -> None:
    rating = fixture_rating(
        comment=comment, reasons=tuple(reasons), external_id=external_id, task_title=title, stars=stars
    )
    template = TEMPLATE + "\n{comment} {reasons} {title} {external_id}"
    message = render_message(rating, template)
    assert message.endswith("\n[bringg:1:3452]") or message == "[bringg:1:3452]"
    assert len(message) < MAX_MESSAGE_CHARS
    assert ends_with_reference_tag(message, rating.reference_tag)
    # No line but the last looks like the tag, and each of the template's lines shows once at most.
    *body, _ = message.split("\n")
    assert not any(line.startswith("[") for line in body)
    for prefix in ("Customer rating:", "Comment:", "Reasons:", "Order:", "Task:"):
        assert sum(line.startswith(prefix) for line in body) <= 1


def test_default_template_has_no_problems() -> None:
    assert template_problems(TEMPLATE) == []


def test_every_field_may_be_used() -> None:
    assert template_problems(" ".join("{" + name + "}" for name in TEMPLATE_FIELDS)) == []


def test_working_specs_and_conversions_are_allowed() -> None:
    assert template_problems("{stars:>3d} {comment!r:<20} {title!a} {merchant_id:x} {{literal}}") == []


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {colour}", "unknown field {colour}"),
        ("{comment.upper}", "unknown field {comment.upper}"),
        ("{ stars }", "unknown field { stars }"),
        ("{} stars", "positional field {}"),
        ("{0} stars", "positional field {0}"),
        ("{comment:d}", "field {comment:d}: format spec does not work for comment"),
        ("{stars:q}", "field {stars:q}: format spec does not work for stars"),
        ("{stars!x}", "field {stars!x}: unknown conversion !x"),
        ("{stars:{width}}", "field {stars:{width}}: nested fields"),
        ("Rated {stars", "bad format syntax"),
        ("Rated stars}", "bad format syntax"),
    ],
)
def test_template_problem_names_the_field(template: str, expected: str) -> None:
    problems = template_problems(template)
    assert len(problems) == 1
    assert problems[0].startswith(expected)
    assert "\n" not in problems[0]


def test_each_bad_field_is_its_own_problem() -> None:
    assert len(template_problems("{colour} {stars} {} {size}")) == 3


@given(template=st.text(alphabet="{}!:.x0dsr\n" + "".join(TEMPLATE_FIELDS), max_size=40))
def test_a_template_without_problems_always_renders(template: str) -> None:
    if template_problems(template) == []:
        assert render_message(fixture_rating(comment="c"), template).endswith("[bringg:1:3452]")


def test_tag_must_end_the_message_to_count() -> None:
    tag = "[bringg:1:3452]"
    assert ends_with_reference_tag(f"Customer rating: 4/5\n{tag}\n", tag)
    assert not ends_with_reference_tag(f"Comment: see {tag} please\n[bringg:1:9999]", tag)
    assert not ends_with_reference_tag("x\n[bringg:1:3452:20220721T080000.000000Z]", tag)


@given(
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)),
)
def test_an_updated_ratings_tag_stamps_its_instant_as_strftime_did(
    moment: datetime, offset: timedelta
) -> None:
    updated_at = moment.replace(tzinfo=timezone(offset))
    rating = fixture_rating(updated_at=updated_at)
    # The stamp as it was written before: operators and reconciliation find tags already sent by it.
    stamp = updated_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    assert rating.reference_tag == f"[bringg:1:3452:{stamp}]"


def spelled_before(rating: Rating, template: str, *, max_comment_chars: int = 1000) -> str:
    """render_message as it was spelled before its values were marked by kinds worked out per template
    (commit fa4cb98): each user text's first line tested against the whole line so far, every call."""
    from string import Formatter

    def one_line(text: str | None) -> str:
        return " ".join((text or "").split())

    def shorten(text: str, limit: int) -> str:
        return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"

    def lines_of(text: str | None) -> str:
        return "\n".join(line.rstrip() for line in (text or "").strip().splitlines()) if text else ""

    def quoted(text: str, *, starts_line: bool) -> str:
        first, *rest = text.split("\n")
        marked = ["> " + first if starts_line and first.strip() else first]
        return "\n".join(marked + [("> " + line).rstrip() for line in rest])

    reasons = ", ".join(text for text in (one_line(reason) for reason in rating.reasons) if text)
    values: dict[str, int | str] = {
        "stars": rating.stars,
        "comment": shorten(lines_of(rating.comment), max_comment_chars),
        "reasons": shorten(reasons, 500),
        "external_id": shorten(one_line(rating.external_id), 200),
        "title": shorten(one_line(rating.task_title), 200),
        "merchant_id": rating.merchant_id,
        "rating_id": rating.rating_id,
    }
    conversions: dict[str, Callable[[object], str]] = {"s": str, "r": repr, "a": ascii}
    lines: list[list[tuple[str, str | None, str, str | None]]] = [[]]
    for literal, field, spec, conversion in Formatter().parse(template):
        *whole_lines, rest = literal.split("\n")
        for text in whole_lines:
            lines[-1].append((text, None, "", None))
            lines.append([])
        lines[-1].append((rest, field, spec or "", conversion))
    rendered_lines = []
    for line in lines:
        fields = {field for _, field, _, _ in line if field is not None}
        if fields and all(values[field] == "" for field in fields):
            continue
        rendered = ""
        for literal, field, spec, conversion in line:
            rendered += literal
            if field is not None:
                value = values[field]
                text = format(conversions[conversion](value) if conversion else value, spec)
                user_text = field in ("comment", "reasons", "external_id", "title")
                rendered += quoted(text, starts_line=not rendered.strip()) if user_text else text
        rendered_lines.append(rendered.rstrip())
    body = "\n".join(rendered_lines).strip()
    tag = rating.reference_tag
    body = shorten(body, MAX_MESSAGE_CHARS - 1 - len(tag) - 1)
    return f"{body}\n{tag}" if body else tag


# Templates of the fields, the characters that matter to lines and marks, and working specs.
template_pieces = st.sampled_from(
    [
        *("{" + name + "}" for name in TEMPLATE_FIELDS),
        "{comment!r}",
        "{title:>12}",
        "{stars:03d}",
        "{reasons!a:.5}",
        "\n",
        " ",
        "  \t",
        "Comment: ",
        ">",
        "{{",
        "}}",
        "x",
    ]
)
user_texts = st.one_of(
    st.none(),
    st.text(alphabet=" \t\n\r\u2028\x0b>x…é", max_size=12),
    st.text(max_size=20),
    huge_text,
)


@given(
    template=st.lists(template_pieces, max_size=12).map("".join),
    comment=user_texts,
    reasons=st.lists(st.one_of(st.text(alphabet=" \n\tx,", max_size=6), huge_text), max_size=4),
    external_id=user_texts,
    title=user_texts,
    stars=st.integers(min_value=1, max_value=5),
    max_comment_chars=st.sampled_from([0, 1, 3, 1000]),
)
def test_each_message_is_spelled_byte_for_byte_as_before(
    template: str,
    comment: str | None,
    reasons: list[str],
    external_id: str | None,
    title: str | None,
    stars: int,
    max_comment_chars: int,
) -> None:
    rating = fixture_rating(
        comment=comment, reasons=tuple(reasons), external_id=external_id, task_title=title, stars=stars
    )
    assert render_message(rating, template, max_comment_chars=max_comment_chars) == spelled_before(
        rating, template, max_comment_chars=max_comment_chars
    )
