"""RELAY_TENANTS_FILE: a TOML table per tenant, read with tomllib; every problem one line, never a secret."""

import os
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SecretStr, Strict, ValidationError

from relay.console import printable
from relay.domain.ids import MAX_ID
from relay.settings import (
    ADMIN_APART,
    Duration,
    InquiryIdPattern,
    MaxConcurrency,
    MaxRps,
    MessageTemplate,
    OAuthTokenTtl,
    Settings,
    SettingsError,
    credential_problems,
    opens_admin,
)
from relay.tenants.tenant import BringgAuth, QuivoAccount, Tenant

# It becomes part of the tenant's webhook URL and a metrics label.
TENANT_NAME = re.compile(r"[a-z0-9-]{1,40}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The one in use and the next (or the last): a secret is rotated in Bringg without one refused webhook.
MAX_SECRETS_OF_A_KIND = 2
SECRET_SYNTAX = 'a string, or the environment variable that holds it: { env = "NAME" }'

# Where the file may hold a secret, table by table.
SECRET_KEYS = {
    "bringg": {"webhook_tokens", "jwt_secrets", "oauth_client_secrets"},
    "quivo": {"api_key", "password"},
}
T = TypeVar("T")
# Which process a problem stops: the one serving webhooks, the one delivering to Quivo, or any (None).
Concern = Literal["webhook", "worker"] | None


@dataclass(frozen=True)
class SecretSource:
    """A secret as the file writes it: the value itself, or the name of the variable that holds it."""

    value: SecretStr | None = None
    env: str | None = None


def _secret_source(raw: object) -> SecretSource:
    if isinstance(raw, str):
        return SecretSource(value=SecretStr(raw))
    if isinstance(raw, dict) and set(raw) == {"env"}:
        name = raw["env"]
        if isinstance(name, str) and ENV_NAME.fullmatch(name):
            return SecretSource(env=name)
    raise ValueError(f"must be {SECRET_SYNTAX}")


Secret = Annotated[SecretSource, PlainValidator(_secret_source)]
Secrets = Annotated[list[Secret], Field(min_length=1, max_length=MAX_SECRETS_OF_A_KIND)]
MerchantId = Annotated[int, Strict(), Field(ge=0, le=MAX_ID)]


class _Table(BaseModel):
    # A misspelt key would otherwise leave a setting silently at the environment's value.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BringgTable(_Table):
    """[tenants.NAME.bringg]: how this tenant's Bringg authenticates (the methods of relay/bringg/auth.py)."""

    auth: Literal["none"] | None = None
    token_header: str | None = None
    webhook_tokens: Secrets | None = None
    jwt_secrets: Secrets | None = None
    jwt_issuer: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secrets: Secrets | None = None
    oauth_token_ttl_s: OAuthTokenTtl | None = None


class QuivoTable(_Table):
    """[tenants.NAME.quivo]: the tenant's Quivo account, and how hard the relay may call it."""

    base_url: str | None = None
    api_key: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    max_concurrency: MaxConcurrency | None = None
    max_rps: MaxRps | None = None
    rating_min: float | None = None
    rating_max: float | None = None


class TenantTable(_Table):
    """[tenants.NAME]: a value left out is the environment's (RELAY_... and QUIVO_... settings)."""

    merchants: Annotated[list[MerchantId], Field(min_length=1)]
    bringg: BringgTable = BringgTable()
    quivo: QuivoTable = QuivoTable()
    inquiry_id_pattern: InquiryIdPattern | None = None
    message_template: MessageTemplate | None = None
    unmatched_ttl: Duration | None = None


class _Findings:
    """The problems found so far that concern this process's role."""

    def __init__(self, *, serves_webhooks: bool, runs_worker: bool) -> None:
        self.concerns: set[Concern] = {None}
        self.concerns |= {"webhook"} if serves_webhooks else set()
        self.concerns |= {"worker"} if runs_worker else set()
        self.lines: list[str] = []

    def add(self, lines: Iterable[str], concern: Concern = None) -> None:
        if concern in self.concerns:
            self.lines += lines


def read_tenants_file(
    path: Path, settings: Settings, *, serves_webhooks: bool, runs_worker: bool
) -> list[Tenant]:
    """The tenants `path` defines, values left out taken from `settings`; SettingsError names every problem.

    A webhook-serving process is refused for problems of Bringg authentication, a delivering one for
    problems of the Quivo accounts, as the environment's settings are; every process for the rest.
    """
    where = printable(str(path))
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
            mode = os.fstat(file.fileno()).st_mode
    except OSError as error:
        raise SettingsError([f"{where}: cannot read it: {error.strerror}"]) from None
    except UnicodeDecodeError:
        raise SettingsError([f"{where}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError([f"{where}: not valid TOML: {error}"]) from None
    found = _Findings(serves_webhooks=serves_webhooks, runs_worker=runs_worker)
    found.add(
        f"{printable(key)}: unknown key; the file holds [tenants.NAME] tables only"
        for key in data
        if key != "tenants"
    )
    tables = data.get("tenants", {})
    if not isinstance(tables, dict):
        found.add(["tenants: must hold one [tenants.NAME] table per tenant"])
        tables = {}
    elif not tables:
        found.add([f"{where}: defines no tenant; add a [tenants.NAME] table"])
    tenants = [
        tenant
        for name, table in tables.items()
        if (tenant := _tenant(name, table, settings, found)) is not None
    ]
    _shared(tenants, found)
    if mode & 0o077 and _holds_secret(tables):
        found.add(
            [
                f"{where}: holds a secret and is readable by group or others; chmod 600 {where}, "
                f"or write each secret as {SECRET_SYNTAX.removeprefix('a string, or ')}"
            ]
        )
    if found.lines:
        raise SettingsError(found.lines)
    return tenants


def _tenant(name: str, raw: object, settings: Settings, found: _Findings) -> Tenant | None:
    key = f"tenants.{printable(name)}"
    if not TENANT_NAME.fullmatch(name):
        found.add([f"{key}: a tenant's name is 1 to 40 lowercase letters, digits and -; it is part of a URL"])
        return None
    if not isinstance(raw, dict):
        found.add([f"{key}: must be a table ([{key}])"])
        return None
    try:
        table = TenantTable.model_validate(raw)
    except ValidationError as error:
        found.add(_line(key, item) for item in error.errors(include_url=False))
        return None
    quivo = table.quivo
    bringg = _bringg(f"{key}.bringg", table.bringg, settings, found)
    account = QuivoAccount(
        base_url=_or(quivo.base_url, settings.quivo_base_url),
        api_key=_secret(f"{key}.quivo.api_key", quivo.api_key, found, "worker"),
        username=_name(f"{key}.quivo.username", quivo.username, found, "worker"),
        password=_secret(f"{key}.quivo.password", quivo.password, found, "worker"),
        max_concurrency=_or(quivo.max_concurrency, settings.quivo_max_concurrency),
        max_rps=_or(quivo.max_rps, settings.quivo_max_rps),
        rating_min=_or(quivo.rating_min, settings.quivo_rating_min),
        rating_max=_or(quivo.rating_max, settings.quivo_rating_max),
    )
    if account.rating_max <= account.rating_min:
        found.add(
            [f"{key}.quivo.rating_max: must be greater than rating_min (left out: QUIVO_RATING_MAX, _MIN)"],
            "worker",
        )
    return Tenant(
        name=name,
        merchants=frozenset(table.merchants),
        bringg=bringg,
        quivo=account,
        inquiry_id_pattern=_or(table.inquiry_id_pattern, settings.relay_inquiry_id_pattern),
        message_template=_or(table.message_template, settings.relay_message_template),
        unmatched_ttl=_or(table.unmatched_ttl, settings.relay_unmatched_ttl),
    )


def _bringg(key: str, table: BringgTable, settings: Settings, found: _Findings) -> BringgAuth:
    admin = settings.relay_admin_token
    kinds = {"webhook_tokens": table.webhook_tokens, "jwt_secrets": table.jwt_secrets}
    kinds["oauth_client_secrets"] = table.oauth_client_secrets
    secrets: dict[str, tuple[SecretStr, ...]] = {}
    for kind, sources in kinds.items():
        resolved = []
        for index, source in enumerate(sources or ()):
            where = f"{key}.{kind}[{index}]"
            secret = _secret(where, source, found, "webhook", guessable=True)
            if secret and admin and opens_admin(secret.get_secret_value(), admin.get_secret_value()):
                found.add([f"{where}: must differ from RELAY_ADMIN_TOKEN {ADMIN_APART}"], "webhook")
            resolved += [secret] if secret is not None else []
        secrets[kind] = tuple(resolved)
    auth = BringgAuth(
        open=table.auth == "none",
        token_header=_name(f"{key}.token_header", table.token_header, found, "webhook")
        or settings.bringg_token_header,
        webhook_tokens=secrets["webhook_tokens"],
        jwt_secrets=secrets["jwt_secrets"],
        jwt_issuer=table.jwt_issuer,
        oauth_client_id=_name(f"{key}.oauth_client_id", table.oauth_client_id, found, "webhook"),
        oauth_client_secrets=secrets["oauth_client_secrets"],
        oauth_token_ttl_s=_or(table.oauth_token_ttl_s, settings.bringg_oauth_token_ttl_s),
    )
    found.add(_auth_problems(key, table), "webhook")
    return auth


def _auth_problems(key: str, table: BringgTable) -> list[str]:
    found: list[str] = []
    if (table.oauth_client_id is None) != (table.oauth_client_secrets is None):
        found.append(f"{key}.oauth_client_id and oauth_client_secrets: set both or neither")
    configured = [
        kind for kind in ("webhook_tokens", "jwt_secrets", "oauth_client_secrets") if getattr(table, kind)
    ]
    if table.auth == "none" and configured:
        found.append(f"{key}.auth: none contradicts the configured method(s): {', '.join(configured)}")
    if table.auth is None and not configured:
        found.append(
            f"{key}: set at least one webhook authentication method: webhook_tokens, jwt_secrets or "
            'oauth_client_id with oauth_client_secrets (or auth = "none" to accept unauthenticated webhooks)'
        )
    return found


def _secret(
    key: str, source: SecretSource | None, found: _Findings, concern: Concern, *, guessable: bool = False
) -> SecretStr | None:
    if source is None:
        if concern == "worker":
            found.add([f"{key}: required to deliver ratings to Quivo"], concern)
        return None
    if source.env is not None:
        value = os.environ.get(source.env, "")
        if not value:
            # The variable's name, never a value: it is the operator's to set where the relay runs.
            found.add([f"{key}: refers to {source.env}, which is not set in the environment"], concern)
            return None
    else:
        assert source.value is not None
        value = source.value.get_secret_value()
    found.add((f"{key}: {problem}" for problem in credential_problems(value, guessable=guessable)), concern)
    return SecretStr(value)


def _name(key: str, value: str | None, found: _Findings, concern: Concern) -> str | None:
    """A name sent with the credentials: a stray character in it fails every request as a wrong secret."""
    if value is None:
        if key.endswith(".username"):
            found.add([f"{key}: required to deliver ratings to Quivo"], concern)
        return None
    found.add((f"{key}: {problem}" for problem in credential_problems(value, guessable=False)), concern)
    return value


def _holds_secret(tables: dict[str, Any]) -> bool:
    """Whether a secret is written in the file itself, in a table valid or not (its problems come too)."""
    for table in tables.values():
        for section, keys in SECRET_KEYS.items():
            values = table.get(section, {}) if isinstance(table, dict) else {}
            for key in keys & set(values if isinstance(values, dict) else ()):
                written = values[key] if isinstance(values[key], list) else [values[key]]
                if any(isinstance(item, str) for item in written):
                    return True
    return False


def _shared(tenants: Sequence[Tenant], found: _Findings) -> None:
    """What two tenants may not share: a merchant, a webhook secret, an OAuth client id."""
    merchants: dict[int, str] = {}
    secrets: dict[str, str] = {}
    client_ids: dict[str, str] = {}
    for tenant in tenants:
        key = f"tenants.{tenant.name}"
        for merchant in sorted(tenant.merchants or ()):
            if (owner := merchants.setdefault(merchant, tenant.name)) != tenant.name:
                found.add(
                    [f"{key}.merchants: {merchant} is also tenants.{owner}'s; a merchant has one tenant"]
                )
        bringg = tenant.bringg
        for secret in (*bringg.webhook_tokens, *bringg.jwt_secrets, *bringg.oauth_client_secrets):
            if (owner := secrets.setdefault(secret.get_secret_value(), tenant.name)) != tenant.name:
                found.add(
                    [f"{key}.bringg: a webhook secret is also tenants.{owner}'s; each tenant needs its own"],
                    "webhook",
                )
        client_id = bringg.oauth_client_id
        if client_id is not None and (owner := client_ids.setdefault(client_id, tenant.name)) != tenant.name:
            found.add(
                [f"{key}.bringg.oauth_client_id: also tenants.{owner}'s; each tenant needs its own"],
                "webhook",
            )


def _line(prefix: str, item: Any) -> str:
    where = prefix + "".join(
        f"[{part}]" if isinstance(part, int) else f".{printable(str(part))}" for part in item["loc"]
    )
    # The input is left out on purpose: it may be a secret.
    message = (
        "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
    )
    return f"{where}: {message}"


def _or(value: T | None, default: T) -> T:
    return default if value is None else value
