"""The bytes the Quivo client writes, compared with those it wrote before its sends were made cheaper."""

import asyncio
import json
import re

import aiohttp
from hypothesis import given
from hypothesis import strategies as st

from relay.quivo.client import QuivoClient, _rating_body

# (rating, message): floats json writes in several ways, and text it escapes (quotes, control characters,
# line and paragraph separators, non-ASCII, astral characters).
SENDS = [
    (4.0, "Customer rating: 4/5 stars\nComment: Quick and friendly\n[bringg:1:2]"),
    (0.1 + 0.2, 'He said "fine" \\ ok\t\r\n\x00\x1f\x7f [bringg:1:3:20261202T101255.723207Z]'),
    (1e-7, "Caf\u00e9 \u2028 \u2029 \U0001f600 \ud7ff\ufffd"),
    (1e22, ""),
    (5, "an int rating"),
    (123456789.125, "</script><!-- & ' \u0085"),
]
# Recorded from the client before the change (aiohttp's User-Agent line left out, the port replaced).
RECORDED = [
    [
        b"POST /api/login HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 59",
        b"Content-Type: application/json",
        b"",
        b'{"username": "relay@example.com", "password": "p\\"w\\u00e9"}',
    ],
    [
        b"POST /api/customerInquiries/1/ratings HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 105",
        b"Content-Type: application/json",
        b"",
        (
            b'{"rating": 4.0, "ratingMessage": "Customer rating: 4/5 stars\\nComment: Quick'
            b' and friendly\\n[bringg:1:2]"}'
        ),
    ],
    [
        b"POST /api/customerInquiries/2/ratings HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 135",
        b"Content-Type: application/json",
        b"",
        (
            b'{"rating": 0.30000000000000004, "ratingMessage": "He said \\"fine\\" \\\\ ok'
            b'\\t\\r\\n\\u0000\\u001f\\u007f [bringg:1:3:20261202T101255.723207Z]"}'
        ),
    ],
    [
        b"POST /api/customerInquiries/3/ratings HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 87",
        b"Content-Type: application/json",
        b"",
        (b'{"rating": 1e-07, "ratingMessage": "Caf\\u00e9 \\u2028 \\u2029 \\ud83d\\ude00 \\ud7ff\\ufffd"}'),
    ],
    [
        b"POST /api/customerInquiries/4/ratings HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 38",
        b"Content-Type: application/json",
        b"",
        b'{"rating": 1e+22, "ratingMessage": ""}',
    ],
    [
        b"POST /api/customerInquiries/5/ratings HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 47",
        b"Content-Type: application/json",
        b"",
        b'{"rating": 5, "ratingMessage": "an int rating"}',
    ],
    [
        b"POST /api/customerInquiries/6/ratings HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 70",
        b"Content-Type: application/json",
        b"",
        b'{"rating": 123456789.125, "ratingMessage": "</script><!-- & \' \\u0085"}',
    ],
    [
        b"POST /api/customerInquiries/7/ratings HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 55",
        b"Content-Type: application/json",
        b"",
        b'{"rating": 2.5, "ratingMessage": "refused once \\u00e9"}',
    ],
    [
        b"POST /api/login HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 59",
        b"Content-Type: application/json",
        b"",
        b'{"username": "relay@example.com", "password": "p\\"w\\u00e9"}',
    ],
    [
        b"POST /api/customerInquiries/7/ratings HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-2",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"Content-Length: 55",
        b"Content-Type: application/json",
        b"",
        b'{"rating": 2.5, "ratingMessage": "refused once \\u00e9"}',
    ],
    [
        b"GET /api/customerInquiries/8 HTTP/1.1",
        b"Host: HOST",
        b"X-Api-Key: key-1",
        b"Authorization: Bearer tok-2",
        b"Accept: */*",
        b"Accept-Encoding: gzip, deflate",
        b"",
        b"",
    ],
]


class RawQuivo:
    """Records each request's bytes as they came over the socket; answers a token to a login, 401 to the
    one call marked to be refused, and a small inquiry to any other."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.logins = 0
        self.refuse = b"/customerInquiries/7/"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
            request = head + await reader.readexactly(int(length[1]) if length else 0)
            self.requests.append(request)
            status, body = 200, b'{"id": 1, "currentRating": 4.0}'
            if request.startswith(b"POST /api/login "):
                self.logins += 1
                body = json.dumps({"token": f"tok-{self.logins}"}).encode()
            elif self.refuse in request.split(b"\r\n", 1)[0]:
                self.refuse = b"(refused once)"
                status, body = 401, b'{"message": "expired"}'
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % (status, len(body))
            )
            writer.write(body)
            await writer.drain()


async def test_requests_are_byte_for_byte_those_recorded() -> None:
    quivo = RawQuivo()
    server = await asyncio.start_server(quivo.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        client = QuivoClient(
            session,
            base_url=f"http://127.0.0.1:{port}/api/",
            api_key="key-1",
            username="relay@example.com",
            password='p"w\u00e9',
            auth_prefix="Bearer ",
        )
        for inquiry_id, (rating, message) in enumerate(SENDS, start=1):
            assert (await client.post_rating(inquiry_id, rating, message)).status == 200
        assert (await client.post_rating(7, 2.5, "refused once \u00e9")).status == 200
        assert (await client.get_inquiry(8)).status == 200

    seen = [
        re.sub(rb"\r\nUser-Agent: [^\r]*", b"", request).replace(b"127.0.0.1:%d" % port, b"HOST")
        for request in quivo.requests
    ]
    assert [request.split(b"\r\n") for request in seen] == RECORDED
    # The recording is what json.dumps makes of each payload: the bodies were never anything else.
    for (rating, message), request in zip(SENDS, seen[1:], strict=False):
        assert request.endswith(
            b"\r\n\r\n" + json.dumps({"rating": rating, "ratingMessage": message}).encode()
        )


@given(st.one_of(st.floats(), st.integers(1, 10)), st.text())
def test_a_rating_body_is_what_json_dumps_writes(rating: float, message: str) -> None:
    assert _rating_body(rating, message) == json.dumps({"rating": rating, "ratingMessage": message}).encode()
