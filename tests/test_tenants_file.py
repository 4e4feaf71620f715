"""The tenants file: `relay tenants check` shows a valid file's tenants, or each problem on a line."""

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from relay.settings import Settings, SettingsError
from relay.tenants.file import TenantTable, read_tenants_file
from relay.tenants.tenant import implicit_tenant
from tests.processes import run_relay

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "tenants.example.toml"
# What the example's references point at, as the relay's environment would hold them.
EXAMPLE_ENV = {
    "ACME_BRINGG_TOKEN": "acme-token-in-use-5f0c1d2e3a4b",
    "ACME_BRINGG_TOKEN_NEXT": "acme-token-next-9a8b7c6d5e4f",
    "ACME_BRINGG_JWT_SECRET": "acme-jwt-secret-1a2b3c4d5e6f",
    "ACME_QUIVO_API_KEY": "acme-quivo-key-77aa",
    "ACME_QUIVO_PASSWORD": "acme-quivo-password-88bb",
    "GLOBEX_BRINGG_OAUTH_SECRET": "globex-oauth-secret-0f1e2d3c",
    "GLOBEX_QUIVO_API_KEY": "globex-quivo-key-99cc",
    "GLOBEX_QUIVO_PASSWORD": "globex-quivo-password-00dd",
}
LITERAL_TOKEN = "literal-webhook-token-c0ffee123456"
LITERAL_PASSWORD = "literal-quivo-password-d00d"
SECRETS = [*EXAMPLE_ENV.values(), LITERAL_TOKEN, LITERAL_PASSWORD]
CONFIGURATION_ERROR = "relay: configuration error: "


def check(tmp_path: Path, toml: str | Path, env: dict[str, str] | None = None, mode: int = 0o600) -> Any:
    """`relay tenants check` on the example or on `toml` in a file of that mode; no secret in the output."""
    path = toml if isinstance(toml, Path) else tmp_path / "tenants.toml"
    if not isinstance(toml, Path):
        path.write_text(toml)
        path.chmod(mode)
    done = run_relay("tenants", "check", str(path), env=env or {}, cwd=tmp_path)
    assert [secret for secret in SECRETS if secret in done.stdout + done.stderr] == []
    return done


def problems(done: Any) -> list[str]:
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert all(line.startswith(CONFIGURATION_ERROR) for line in lines)
    return [line.removeprefix(CONFIGURATION_ERROR) for line in lines]


def tenant(name: str, merchants: str, *, bringg: str, quivo: str = "", top: str = "") -> str:
    quivo = quivo or 'api_key = { env = "QK" }\nusername = "u"\npassword = { env = "QP" }'
    return (
        f"[tenants.{name}]\nmerchants = {merchants}\n{top}\n"
        f"[tenants.{name}.bringg]\n{bringg}\n[tenants.{name}.quivo]\n{quivo}\n"
    )


QUIVO_ENV = {"QK": "quivo-key-in-env", "QP": "quivo-password-in-env"}
TOKEN_A = 'webhook_tokens = [{ env = "TOKEN_A" }]'
TOKEN_ENV = {**QUIVO_ENV, "TOKEN_A": "token-a-0123456789abcdef", "TOKEN_B": "token-b-0123456789abcdef"}


def test_the_example_is_valid_and_shown_tenant_by_tenant_with_two_tokens_of_acme(tmp_path: Path):
    done = check(tmp_path, EXAMPLE, EXAMPLE_ENV)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "acme: merchants 1001, 1002; bringg auth token (2 secrets), jwt; quivo https://api.quivo.co",
        "globex: merchants 2001; bringg auth oauth; quivo https://api.quivo.co",
    ]


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            found |= _keys(nested, f"{prefix}{name}.")
        else:
            found.add(f"{prefix}{name}")
    return found


def _example_keys() -> set[str]:
    found = set()
    for table in tomllib.loads(EXAMPLE.read_text())["tenants"].values():
        for key, value in table.items():
            found |= {f"{key}.{inner}" for inner in value} if isinstance(value, dict) else {key}
    # `auth = "none"` contradicts any method, so the example shows it commented out under bringg.
    commented = re.findall(r"^# (\w+) = ", EXAMPLE.read_text(), re.MULTILINE)
    assert commented == ["auth"]
    return found | {"bringg.auth"}


def test_the_example_shows_every_key_of_a_tenant_and_no_other():
    assert _example_keys() == _keys(TenantTable)


def test_each_problem_is_one_line_naming_its_tenant_and_key(tmp_path: Path):
    toml = (
        "version = 2\n"
        + tenant("Acme_Corp", "[1]", bringg=TOKEN_A)
        + tenant(
            "acme",
            '[1001, "1002"]',
            top='inquiry_id_pattern = "ACME-[0-9]+"\nmessage_template = "{stars} {colour}"\n'
            'unmatched_ttl = "a fortnight"\ncolour = "red"\n',
            bringg='webhook_tokens = [{ env = "TOKEN_A" }, { env = "TOKEN_B" }, { env = "TOKEN_A" }]\n'
            'jwt_secrets = [{ variable = "JWT" }]\noauth_client_id = "acme"\n',
            quivo='api_key = { env = "QK" }\nusername = " acme"\nmax_concurrency = 0\nmax_rps = 0\n'
            "rating_min = 5\n",
        )
        + tenant("globex", "[]", bringg='webhook_tokens = ["short"]')
        + tenant("initech", "[3001]", bringg="")
    )

    assert problems(check(tmp_path, toml, TOKEN_ENV)) == [
        "version: unknown key; the file holds [tenants.NAME] tables only",
        "tenants.Acme_Corp: a tenant's name is 1 to 40 lowercase letters, digits and -; it is part of a URL",
        "tenants.acme.merchants[1]: Input should be a valid integer",
        "tenants.acme.bringg.webhook_tokens: List should have at most 2 items after validation, not 3",
        "tenants.acme.bringg.jwt_secrets[0]: must be a string, or the environment variable that holds it: "
        '{ env = "NAME" }',
        "tenants.acme.quivo.max_concurrency: Input should be greater than or equal to 1",
        "tenants.acme.quivo.max_rps: Input should be greater than 0",
        "tenants.acme.inquiry_id_pattern: needs a capturing group (the first, or one named inquiry_id) "
        "for the inquiry id",
        "tenants.acme.message_template: unknown field {colour}: use one of stars, comment, reasons, "
        "external_id, title, merchant_id, rating_id",
        "tenants.acme.unmatched_ttl: Input should be a valid timedelta, invalid character in hour",
        "tenants.acme.colour: unknown key",
        "tenants.globex.merchants: List should have at least 1 item after validation, not 0",
        "tenants.initech.bringg: set at least one webhook authentication method: webhook_tokens, jwt_secrets "
        'or oauth_client_id with oauth_client_secrets (or auth = "none" to accept unauthenticated webhooks)',
    ]


def test_resolved_values_are_checked_as_the_environment_s_are(tmp_path: Path):
    toml = tenant(
        "acme",
        "[1]",
        bringg='webhook_tokens = [{ env = "TOKEN_A" }, "short"]\noauth_client_id = "acme"',
        quivo='api_key = { env = "QK" }\nusername = " acme"\nrating_min = 5',
    )

    assert problems(check(tmp_path, toml, {**TOKEN_ENV, "TOKEN_A": "token-a-0123456789abcdef\n"})) == [
        "tenants.acme.bringg.webhook_tokens[0]: starts or ends with whitespace (a secret file's newline?); "
        "remove it",
        "tenants.acme.bringg.webhook_tokens[1]: shorter than 16 characters; use a long random value "
        "(openssl rand -hex 32)",
        "tenants.acme.bringg.oauth_client_id and oauth_client_secrets: set both or neither",
        "tenants.acme.quivo.username: starts or ends with whitespace (a secret file's newline?); remove it",
        "tenants.acme.quivo.password: required to deliver ratings to Quivo",
        "tenants.acme.quivo.rating_max: must be greater than rating_min (left out: QUIVO_RATING_MAX, _MIN)",
    ]


def test_a_reference_to_an_unset_variable_is_named_and_nothing_else_is_told(tmp_path: Path):
    env = {name: value for name, value in EXAMPLE_ENV.items() if name != "ACME_QUIVO_PASSWORD"}

    assert problems(check(tmp_path, EXAMPLE, env)) == [
        "tenants.acme.quivo.password: refers to ACME_QUIVO_PASSWORD, which is not set in the environment"
    ]


def test_a_file_holding_a_secret_is_refused_unless_only_its_owner_reads_it(tmp_path: Path):
    toml = tenant(
        "acme",
        "[1]",
        bringg=f'webhook_tokens = ["{LITERAL_TOKEN}"]',
        quivo=f'api_key = {{ env = "QK" }}\nusername = "u"\npassword = "{LITERAL_PASSWORD}"',
    )
    path = tmp_path / "tenants.toml"

    assert problems(check(tmp_path, toml, QUIVO_ENV, mode=0o644)) == [
        f"{path}: holds a secret and is readable by group or others; chmod 600 {path}, or write each secret "
        'as the environment variable that holds it: { env = "NAME" }'
    ]
    assert problems(check(tmp_path, toml, QUIVO_ENV, mode=0o640)) != []
    # Said beside the file's other problems, also when the secret is in a table that does not validate.
    assert problems(check(tmp_path, toml.replace("[1]", "[]"), QUIVO_ENV, mode=0o604)) == [
        "tenants.acme.merchants: List should have at least 1 item after validation, not 0",
        f"{path}: holds a secret and is readable by group or others; chmod 600 {path}, or write each secret "
        'as the environment variable that holds it: { env = "NAME" }',
    ]
    assert check(tmp_path, toml, QUIVO_ENV, mode=0o600).returncode == 0
    # Secrets all in the environment, the file may be read by anyone (it may live in a repository).
    assert check(tmp_path, tenant("acme", "[1]", bringg=TOKEN_A), TOKEN_ENV, mode=0o644).returncode == 0


def test_a_merchant_a_webhook_secret_or_a_client_id_in_two_tenants_is_refused(tmp_path: Path):
    toml = (
        tenant(
            "acme",
            "[1, 2]",
            bringg=f'{TOKEN_A}\noauth_client_id = "shop"\noauth_client_secrets = [{{ env = "TOKEN_B" }}]',
        )
        + tenant("globex", "[3, 2]", bringg='jwt_secrets = [{ env = "TOKEN_A" }]')
        + tenant(
            "initech", "[4]", bringg='oauth_client_id = "shop"\noauth_client_secrets = [{ env = "OAUTH_C" }]'
        )
    )
    env = {**TOKEN_ENV, "OAUTH_C": "oauth-c-0123456789abcdef"}

    assert problems(check(tmp_path, toml, env)) == [
        "tenants.globex.merchants: 2 is also tenants.acme's; a merchant has one tenant",
        "tenants.globex.bringg: a webhook secret is also tenants.acme's; each tenant needs its own",
        "tenants.initech.bringg.oauth_client_id: also tenants.acme's; each tenant needs its own",
    ]


def test_a_broken_tenants_file_refuses_the_start_with_its_lines(tmp_path: Path):
    path = tmp_path / "tenants.toml"
    path.write_text(tenant("acme", "[1]", bringg='webhook_tokens = [{ env = "UNSET_TOKEN" }]'))
    env = {
        **QUIVO_ENV,
        "RELAY_TENANTS_FILE": str(path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
        "BRINGG_WEBHOOK_TOKEN": "environment-token-0123456789",
        "QUIVO_API_KEY": "k",
        "QUIVO_USERNAME": "u",
        "QUIVO_PASSWORD": "p",
    }

    done = run_relay("serve", env={**env, "PORT": "0"}, cwd=tmp_path)

    assert problems(done) == [
        "tenants.acme.bringg.webhook_tokens[0]: refers to UNSET_TOKEN, which is not set in the environment"
    ]
    assert not (tmp_path / "relay.db").exists()


def test_each_process_is_refused_for_the_part_of_the_file_it_uses(tmp_path: Path, monkeypatch):
    path = tmp_path / "tenants.toml"
    path.write_text(tenant("acme", "[1]", bringg=TOKEN_A, quivo='api_key = { env = "QK" }'))
    for name, value in TOKEN_ENV.items():
        monkeypatch.setenv(name, value)

    webhooks_only = read_tenants_file(path, Settings(), serves_webhooks=True, runs_worker=False)
    with pytest.raises(SettingsError) as refused:
        read_tenants_file(path, Settings(), serves_webhooks=False, runs_worker=True)

    assert [tenant.name for tenant in webhooks_only] == ["acme"]
    assert refused.value.problems == [
        "tenants.acme.quivo.username: required to deliver ratings to Quivo",
        "tenants.acme.quivo.password: required to deliver ratings to Quivo",
    ]


def test_a_value_a_tenant_leaves_out_is_the_environment_s(tmp_path: Path, monkeypatch):
    path = tmp_path / "tenants.toml"
    path.write_text(tenant("acme", "[1]", bringg=TOKEN_A, quivo='max_rps = 3\napi_key = { env = "QK" }'))
    for name, value in {**TOKEN_ENV, "QUIVO_MAX_RPS": "7", "QUIVO_MAX_CONCURRENCY": "2"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RELAY_INQUIRY_ID_PATTERN", r"^QI-(\d+)$")

    (acme,) = read_tenants_file(path, Settings(), serves_webhooks=True, runs_worker=False)

    assert (acme.quivo.max_rps, acme.quivo.max_concurrency) == (3, 2)
    assert acme.inquiry_id_pattern is not None and acme.inquiry_id_pattern.pattern == r"^QI-(\d+)$"
    assert acme.bringg.webhook_tokens[0].get_secret_value() == TOKEN_ENV["TOKEN_A"]
    assert acme.sends_for(1) and not acme.sends_for(2)


def test_without_the_file_the_relay_is_one_tenant_named_default_from_the_environment(monkeypatch):
    monkeypatch.setenv("BRINGG_WEBHOOK_TOKEN", "environment-token-0123456789")
    monkeypatch.setenv("QUIVO_MAX_CONCURRENCY", "3")
    settings = Settings()

    default = implicit_tenant(settings)

    assert default.name == "default"
    assert default.sends_for(1) and default.sends_for(987654321)
    assert default.bringg.methods == settings.auth_methods == ["token"]
    assert default.bringg.webhook_tokens == (settings.bringg_webhook_token,)
    assert default.quivo.max_concurrency == 3
    assert default.message_template == settings.relay_message_template
