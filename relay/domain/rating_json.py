"""A rating's stored JSON text, as its delivery row keeps it, and the rating read back from it."""

from collections.abc import Callable

from relay.domain.rating import Rating

# pydantic's own serializer and validator, called straight: model_dump_json and model_validate_json pass
# each of their options on by keyword at every call, about a sixth of reading a rating back.
_TO_JSON: Callable[[Rating], bytes] = Rating.__pydantic_serializer__.to_json
_FROM_JSON: Callable[[str], Rating] = Rating.__pydantic_validator__.validate_json


def rating_json(rating: Rating) -> str:
    """The rating's stored text: model_dump_json's, byte for byte (rows written before read back the same)."""
    return _TO_JSON(rating).decode()


def read_rating(text: str) -> Rating:
    """The rating a stored text holds, validated in full: a ValidationError for any text that is not one."""
    return _FROM_JSON(text)
