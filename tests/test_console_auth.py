"""The console's door through HTTP: sign-in, the session cookie, CSRF, headers, and no token leaks."""

import re
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

import jwt
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from relay.app import create_app
from relay.http import Handler
from relay.pages.guard import HEADERS
from relay.pages.notices import see_other
from relay.pages.sessions import SESSION_COOKIE, issue_session, signing_key

TOKEN = "console-admin-token-0123456789abcdef"
SIGN_IN = "/console/sign-in"


@pytest.fixture
async def console(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings(relay_admin_token=TOKEN), run_worker=False))


async def signed_in(client, token: str = TOKEN, **options):
    """Signs the client in; the answer to the sign-in POST."""
    form = {"token": token, "next": "/console"}
    return await client.post(SIGN_IN, data=form, allow_redirects=False, **options)


def set_cookie(response, name: str) -> SimpleCookie:
    """The Set-Cookie header the answer gave for `name`, parsed (with its flags)."""
    for header in response.headers.getall("Set-Cookie", []):
        cookie: SimpleCookie = SimpleCookie(header)
        if name in cookie:
            return cookie
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.getall('Set-Cookie', [])}")


async def csrf_of(client) -> str:
    page = await (await client.get("/console")).text()
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page)
    assert found, page
    return found[1]


async def test_no_console_without_an_admin_token(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))
    for path in ("/console", SIGN_IN, "/console/static/console.css"):
        assert (await client.get(path, allow_redirects=False)).status == 404


async def test_pages_redirect_to_sign_in_with_the_page_asked_for(console):
    answer = await console.get("/console?x=1", allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/console/sign-in?next=/console?x%3D1"
    page = await console.get(answer.headers["Location"])
    assert page.status == 200
    assert 'name="next" value="/console?x=1"' in await page.text()


@pytest.mark.parametrize("offered", ["https://evil.example/", "//evil.example", "/admin/stats", "/consolex"])
async def test_next_never_leaves_the_console(console, offered):
    answer = await console.post(SIGN_IN, data={"token": TOKEN, "next": offered}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == "/console"


async def test_a_wrong_token_is_refused_and_logged_without_it(console):
    wrong = "not-the-token-but-long-enough-to-notice"
    with capture_logs() as logs:
        answer = await signed_in(console, wrong)
    assert answer.status == 401
    page = await answer.text()
    assert "That token is not the admin token." in page
    assert wrong not in page
    assert "Set-Cookie" not in answer.headers
    refused = [line for line in logs if line["event"] == "console.sign_in_refused"]
    assert refused and refused[0]["log_level"] == "warning"
    assert wrong not in repr(logs) and TOKEN not in repr(logs)
    assert (await console.get("/console", allow_redirects=False)).status == 303


async def test_guessing_the_token_is_throttled(console):
    statuses = [(await signed_in(console, f"wrong-token-{n:02}-0123456789")).status for n in range(12)]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    # The right token still gets in: an address's failures never lock the operator out.
    assert (await signed_in(console)).status == 303


async def test_session_cookie_flags_and_expiry(console):
    before = datetime.now(UTC)
    answer = await signed_in(console)
    assert answer.status == 303
    assert answer.headers["Location"] == "/console"
    morsel = set_cookie(answer, SESSION_COOKIE)[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/console"
    assert not morsel["secure"]  # plain HTTP here: a Secure cookie would never come back
    assert int(morsel["max-age"]) == 8 * 3600
    assert TOKEN not in morsel.value
    claims = jwt.decode(morsel.value, options={"verify_signature": False})
    assert set(claims) == {"exp", "iat", "jti"}
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    assert (
        before + timedelta(hours=8) - timedelta(seconds=2)
        <= expires
        <= datetime.now(UTC) + timedelta(hours=8)
    )
    overview = await console.get("/console", allow_redirects=False)
    assert overview.status == 200
    assert "Overview" in await overview.text()


async def test_an_expired_or_forged_session_is_no_session(console):
    key = signing_key(TOKEN)
    long_ago = datetime.now(UTC) - timedelta(hours=9)
    expired, _ = issue_session(key, now=long_ago)
    forged, _ = issue_session(signing_key("another-admin-token-0123456789"), now=datetime.now(UTC))
    for cookie in (expired, forged, "not-a-jwt"):
        console.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
        assert (await console.get("/console", allow_redirects=False)).status == 303


async def test_the_cookie_is_secure_over_https(aiohttp_client, make_settings):
    app = create_app(make_settings(relay_admin_token=TOKEN), run_worker=False)

    # What a reverse proxy's forwarded-proto handling does: the request came over HTTPS.
    @web.middleware
    async def over_https(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await handler(request.clone(scheme="https"))

    app.middlewares.insert(0, over_https)
    client = await aiohttp_client(app)
    answer = await signed_in(client)
    assert set_cookie(answer, SESSION_COOKIE)[SESSION_COOKIE]["secure"] is True


@pytest.mark.parametrize(
    ("trusted", "forwarded", "secure"),
    [
        (True, "https", True),
        (True, "HTTPS", True),
        (True, "https, http", False),  # the proxy's own value is the last: a client's comes first
        (True, "http, https", True),
        (True, "gopher", False),
        (False, "https", False),  # not trusted: a client could name any scheme
    ],
)
async def test_a_trusted_proxy_says_whether_the_cookie_is_secure(
    aiohttp_client, make_settings, trusted: bool, forwarded: str, secure: bool
):
    settings = make_settings(relay_admin_token=TOKEN, relay_trust_forwarded_proto=trusted)
    client = await aiohttp_client(create_app(settings, run_worker=False))
    answer = await signed_in(client, headers={"X-Forwarded-Proto": forwarded})
    assert answer.status == 303
    assert bool(set_cookie(answer, SESSION_COOKIE)[SESSION_COOKIE]["secure"]) is secure


async def test_security_headers_on_every_answer(console):
    answers = [
        await console.get("/console", allow_redirects=False),
        await console.get(SIGN_IN),
        await console.get("/console/static/console.css"),
        await signed_in(console, "wrong-token-0123456789abcdef"),
        await signed_in(console),
        await console.get("/console"),
        await console.get("/console/no-such-page"),
        await console.post("/console/sign-out", data={}, allow_redirects=False),
    ]
    assert [answer.status for answer in answers] == [303, 200, 200, 401, 303, 200, 404, 403]
    for answer in answers:
        for name, value in HEADERS.items():
            assert answer.headers.get(name) == value, (answer.url, name)
    csp = HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(console):
    await signed_in(console)
    with capture_logs() as logs:
        missing = await console.post("/console/sign-out", data={}, allow_redirects=False)
        wrong = await console.post("/console/sign-out", data={"csrf_token": "0" * 64}, allow_redirects=False)
    for answer in (missing, wrong):
        assert answer.status == 403
        assert "CSRF" in await answer.text()
    assert [line["event"] for line in logs] == ["console.csrf_refused"] * 2
    # Still signed in: nothing happened.
    assert (await console.get("/console", allow_redirects=False)).status == 200


async def test_a_post_without_a_session_changes_nothing_and_asks_to_sign_in(console):
    answer = await console.post("/console/sign-out", data={"csrf_token": "0" * 64}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == SIGN_IN
    assert "Set-Cookie" not in answer.headers


async def test_a_csrf_token_of_another_session_is_refused(console):
    await signed_in(console)
    old = await csrf_of(console)
    console.session.cookie_jar.clear()
    await signed_in(console)
    answer = await console.post("/console/sign-out", data={"csrf_token": old}, allow_redirects=False)
    assert answer.status == 403


async def test_a_sign_in_from_another_site_is_refused(console):
    answer = await console.post(
        SIGN_IN, data={"token": TOKEN}, headers={"Origin": "https://evil.example"}, allow_redirects=False
    )
    assert answer.status == 403
    assert "Set-Cookie" not in answer.headers
    own = f"http://{console.host}:{console.port}"
    answer = await console.post(
        SIGN_IN, data={"token": TOKEN}, headers={"Origin": own}, allow_redirects=False
    )
    assert answer.status == 303


async def test_sign_out_clears_the_session_and_says_so(console):
    await signed_in(console)
    answer = await console.post(
        "/console/sign-out", data={"csrf_token": await csrf_of(console)}, allow_redirects=False
    )
    assert answer.status == 303
    assert answer.headers["Location"] == SIGN_IN
    cleared = set_cookie(answer, SESSION_COOKIE)[SESSION_COOKIE]
    assert cleared.value == "" and cleared["max-age"] == "0"
    page = await console.get(SIGN_IN)
    assert "Signed out." in await page.text()
    # Shown once: the notice's cookie is cleared by the page that showed it.
    assert "Signed out." not in await (await console.get(SIGN_IN)).text()
    assert (await console.get("/console", allow_redirects=False)).status == 303


async def test_a_notice_shows_as_text(console):
    redirect = see_other("/console", "Saved <script>alert(1)</script>")
    console.session.cookie_jar.update_cookies(
        {name: morsel.value for name, morsel in redirect.cookies.items()}
    )
    page = await (await console.get(SIGN_IN)).text()
    assert "Saved &lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_the_token_never_appears_in_any_page_or_log(console):
    with capture_logs() as logs:
        texts = []
        for answer in [
            await console.get("/console"),
            await signed_in(console, TOKEN + "x"),
            await signed_in(console),
            await console.get("/console"),
            await console.get("/console/nope"),
        ]:
            texts.append(await answer.text())
            texts.append(repr(answer.headers))
    texts.append(repr(logs))
    assert not [text for text in texts if TOKEN in text]
