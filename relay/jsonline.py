"""JSON spelled as json.dumps spells it (", " and ": ", ASCII escapes), at less cost: for log lines."""

from _json import encode_basestring_ascii, make_encoder


def _fallback(value: object) -> object:
    # As structlog's JSONRenderer: a value's own __structlog__ spelling, else its repr.
    try:
        return value.__structlog__()  # type: ignore[attr-defined]
    except AttributeError:
        return repr(value)


# json.dumps's C encoder with its separators and ASCII escaping, built once (json.dumps with a `default`
# builds a new one at every call). No circular check: a log line's values are not circular, and a shared
# check's memo would outlive a failed call.
_ENCODE = make_encoder(None, _fallback, encode_basestring_ascii, None, ": ", ", ", False, False, True)


def encode(value: object) -> str:
    """json.dumps(value, default=the fallback above), by its own C encoder."""
    return "".join(_ENCODE(value, 0))


# A str as json.dumps spells it (quoted, ASCII escapes): for text known to be a str, without spell's test.
quoted = encode_basestring_ascii


def spell(value: object) -> str:
    """One value as json.dumps spells it; a string (a line's event, its request id) straight by the escaping
    the encoder would call."""
    return encode_basestring_ascii(value) if type(value) is str else encode(value)
