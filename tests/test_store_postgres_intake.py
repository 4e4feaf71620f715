"""PostgreSQL intake's row of a webhook: the rating's text is model_dump_json's, for every rating judged."""

from datetime import UTC, datetime

from relay.bringg.payload import judge
from relay.store.postgres import intake
from relay.store.records import InboundWebhook
from tests.test_payload_judgements import corpus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# Where relay_inbound (migration 0011) keeps the rating's JSON.
R_RATING = 14


def test_every_rating_of_the_corpus_is_stored_as_model_dump_json_wrote_it() -> None:
    ratings = 0
    for body in corpus():
        judgement = judge(body)
        if judgement.status != "accepted" or judgement.rating is None:
            continue
        row = intake._arguments(InboundWebhook("req", NOW, body, "application/json", judgement), NOW)
        assert row[R_RATING] == judgement.rating.model_dump_json(), body
        ratings += 1
    assert ratings > 100
