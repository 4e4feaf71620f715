"""Which Quivo customer inquiry a rating belongs to, when the order's external id names it."""

import re

# Quivo's `customerInquiryId` is an int64.
MAX_INQUIRY_ID = 2**63 - 1


def inquiry_id_from_external_id(external_id: str | None, pattern: re.Pattern[str] | None) -> int | None:
    """The inquiry id that `pattern` finds in a Bringg order's external id, or None.

    The pattern is applied with `search`, not `fullmatch`, so an operator can write just the part that
    matters (`INQ-(\\d+)`) and anchor it with `^...$` when the whole id must match. The id is the group
    named `inquiry_id` when the pattern has one, else group 1 (settings insist on one or the other); it
    must be ASCII digits for a positive integer that fits an int64.
    """
    if external_id is None or pattern is None:
        return None
    found = pattern.search(external_id)
    if found is None:
        return None
    digits = found.group("inquiry_id" if "inquiry_id" in pattern.groupindex else 1)
    # int() would also take signs, spaces, underscores and non-ASCII digits; an inquiry id is none of those.
    if digits is None or not (digits.isascii() and digits.isdigit()):
        return None
    # Leading zeros are harmless, but a run of digits that long could not be an int64 anyway.
    significant = digits.lstrip("0")
    if not significant or len(significant) > len(str(MAX_INQUIRY_ID)):
        return None
    inquiry_id = int(significant)
    return inquiry_id if inquiry_id <= MAX_INQUIRY_ID else None
