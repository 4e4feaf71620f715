"""duration_ms: milliseconds since the request reached the relay, to the hundredth, as round() spelled it."""

import json
import time
from unittest import mock

from aiohttp.test_utils import make_mocked_request
from hypothesis import assume, given
from hypothesis import strategies as st

from relay.http import STARTED, elapsed_ms

ARRIVED_NS = 5_000_000_000_000


@given(taken_ns=st.integers(min_value=0, max_value=10**12) | st.sampled_from([0, 4_999, 5_001, 9_999_999]))
def test_elapsed_is_the_milliseconds_rounded_to_the_hundredth(taken_ns):
    # At an exact half the float round() saw fell either side of it; elsewhere the two agree.
    assume(taken_ns % 10_000 != 5_000)
    request = make_mocked_request("POST", "/webhooks/bringg")
    request[STARTED] = ARRIVED_NS
    with mock.patch.object(time, "perf_counter_ns", return_value=ARRIVED_NS + taken_ns):
        taken = elapsed_ms(request)

    assert json.dumps(taken) == json.dumps(round(taken_ns / 1_000_000, 2))
