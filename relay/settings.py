"""Every setting of the relay, read from the environment once and validated before anything starts."""

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from relay.domain.matching import pattern_cost_problem
from relay.domain.message import template_problems

DEFAULT_MESSAGE_TEMPLATE = (
    "Customer rating: {stars}/5 stars\\n"
    "Comment: {comment}\\n"
    "Reasons: {reasons}\\n"
    "Order: {external_id}\\n"
    "Task: {title}"
)

# Credentials a stranger can try over the network, and how long each must be for guessing to be hopeless.
WEBHOOK_SECRETS = ("bringg_webhook_token", "bringg_jwt_secret", "bringg_oauth_client_secret")
GUESSABLE_SECRETS = (*WEBHOOK_SECRETS, "relay_admin_token")
WORKER_SECRETS = ("quivo_api_key", "quivo_password")
# Not secret, but sent on every request: a stray character in them fails each one just the same.
WEBHOOK_NAMES = ("bringg_oauth_client_id", "bringg_token_header")
WORKER_NAMES = ("quivo_username",)
MIN_SECRET_LENGTH = 16
ADMIN_APART = "(whoever can send webhooks must not also hold the admin API)"
# Processes of `relay serve` on one port: a few per core; more only add contention for the database.
MAX_PROCESSES = 64


def _seconds_as_number(value: object) -> object:
    # "3600" from the environment means seconds, as a bare number does.
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        return float(value)
    return value


def _inquiry_id_pattern(pattern: re.Pattern[str]) -> re.Pattern[str]:
    if pattern.groups == 0 and "inquiry_id" not in pattern.groupindex:
        raise ValueError("needs a capturing group (the first, or one named inquiry_id) for the inquiry id")
    # Order ids come from senders: a pattern that backtracks wildly would stall the event loop.
    too_slow = pattern_cost_problem(pattern)
    if too_slow:
        raise ValueError(too_slow)
    return pattern


def _message_template(template: str) -> str:
    # An environment variable holds one line, so `\n` in the value stands for a line break.
    template = template.replace("\\n", "\n")
    problems = template_problems(template)
    if problems:
        raise ValueError("; ".join(problems))
    return template


# The values that belong to one Quivo account: the environment's, and each tenant's own (relay/tenants).
MaxConcurrency = Annotated[int, Field(ge=1, le=1024)]
MaxRps = Annotated[float, Field(gt=0)]
InquiryIdPattern = Annotated[re.Pattern[str], AfterValidator(_inquiry_id_pattern)]
MessageTemplate = Annotated[str, AfterValidator(_message_template)]
Duration = Annotated[timedelta, BeforeValidator(_seconds_as_number)]
OAuthTokenTtl = Annotated[int, Field(ge=60, le=86400)]


class SettingsError(Exception):
    """The environment does not describe a runnable relay; each line names one problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings(BaseSettings):
    """The relay's configuration; field names are the environment variable names, lower-cased."""

    # An empty variable means "not set", so a copied example file with blanks works as is.
    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, env_ignore_empty=True
    )

    port: int = Field(8080, ge=0, le=65535)
    relay_host: str = "0.0.0.0"
    # `relay worker` listens here for /healthz and /metrics only (`relay serve` answers those on PORT).
    relay_worker_port: int = Field(9101, ge=1, le=65535)
    relay_worker_host: str = "0.0.0.0"
    # `relay serve` forks this many processes serving on its one port (`--processes` overrides it).
    relay_processes: int = Field(1, ge=1, le=MAX_PROCESSES)
    database_url: str = "sqlite:///var/relay.db"
    # Several Bringg merchants, each onto its own Quivo account (relay/tenants); unset, one implicit tenant.
    relay_tenants_file: Path | None = None

    bringg_auth: Literal["none"] | None = None
    bringg_webhook_token: SecretStr | None = None
    bringg_token_header: str = "Authorization"
    bringg_jwt_secret: SecretStr | None = None
    bringg_jwt_issuer: str | None = None
    bringg_oauth_client_id: str | None = None
    bringg_oauth_client_secret: SecretStr | None = None
    bringg_oauth_token_ttl_s: OAuthTokenTtl = 3600

    relay_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    relay_store_timeout_s: float = Field(5.0, gt=0)
    relay_db_pool_size: int = Field(10, ge=1, le=1000)
    relay_body_timeout_s: float = Field(30.0, gt=0)

    quivo_base_url: str = "https://api.quivo.co"
    quivo_api_key: SecretStr | None = None
    quivo_username: str | None = None
    quivo_password: SecretStr | None = None
    quivo_auth_prefix: str = ""
    quivo_token_ttl_s: float = Field(3600.0, ge=60)
    quivo_timeout_s: float = Field(10.0, gt=0)
    quivo_max_concurrency: MaxConcurrency = 8
    quivo_max_rps: MaxRps = 20.0
    quivo_rating_min: float = 1.0
    quivo_rating_max: float = 5.0

    relay_inquiry_id_pattern: InquiryIdPattern | None = None
    relay_message_template: MessageTemplate = DEFAULT_MESSAGE_TEMPLATE
    relay_unmatched_ttl: Duration = timedelta(days=14)
    relay_retry_base_s: float = Field(2.0, gt=0)
    relay_retry_max_s: float = Field(600.0, gt=0)
    relay_max_attempts: int = Field(20, ge=1)
    relay_max_age: Duration = timedelta(days=3)
    relay_shutdown_grace_s: float = Field(10.0, ge=0)
    relay_sweep_interval_s: float = Field(5.0, gt=0)
    relay_unsure_settle_s: float = Field(60.0, gt=0)

    relay_admin_token: SecretStr | None = None
    relay_trust_forwarded_proto: bool = False
    relay_retention_days: float = Field(30.0, gt=0)
    relay_ready_max_backlog_age_s: float = Field(900.0, gt=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("database_url", mode="after")
    @classmethod
    def _database_url(cls, url: str) -> str:
        if url.startswith(("postgresql://", "postgres://")):
            try:
                # Read here, so a bad port is one line at start, not a traceback from the driver.
                urlsplit(url).port  # noqa: B018
            except ValueError:
                raise ValueError("the port after the host must be a number from 0 to 65535") from None
            return url
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise ValueError(
                "must look like sqlite:///relative/path.db, sqlite:////absolute/path.db "
                "or postgresql://user:password@host:5432/db"
            )
        return url

    @property
    def database_path(self) -> Path:
        """The SQLite file: `sqlite:///var/relay.db` is relative to the working folder."""
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def quivo_lease_s(self) -> float:
        """A claimed delivery's lease outlives a reconcile read, a login and a send."""
        return 3 * self.quivo_timeout_s + 5

    def problems(self, *, serves_webhooks: bool, runs_worker: bool) -> list[str]:
        """Cross-setting rules for the role this process plays, one line per problem."""
        found: list[str] = []
        if serves_webhooks:
            found += self._auth_problems()
        if runs_worker:
            for name in ("quivo_api_key", "quivo_username", "quivo_password"):
                if getattr(self, name) is None:
                    found.append(f"{name.upper()}: required to deliver ratings to Quivo")
            if self.quivo_rating_max <= self.quivo_rating_min:
                found.append("QUIVO_RATING_MAX: must be greater than QUIVO_RATING_MIN")
            if self.relay_retry_max_s < self.relay_retry_base_s:
                found.append("RELAY_RETRY_MAX_S: must be at least RELAY_RETRY_BASE_S")
            if self.quivo_timeout_s > self.relay_unsure_settle_s:
                # Quivo may commit as late as we wait for it; a reconcile before then could resend.
                found.append(
                    "QUIVO_TIMEOUT_S: must not exceed RELAY_UNSURE_SETTLE_S "
                    "(how late Quivo may commit a send)"
                )
        found += self._secret_problems(serves_webhooks=serves_webhooks, runs_worker=runs_worker)
        return found

    def _secret_problems(self, *, serves_webhooks: bool, runs_worker: bool) -> list[str]:
        names = (GUESSABLE_SECRETS + WEBHOOK_NAMES if serves_webhooks else ()) + (
            WORKER_SECRETS + WORKER_NAMES if runs_worker else ()
        )
        found: list[str] = []
        for name in names:
            value = getattr(self, name)
            value = _text(value) if isinstance(value, SecretStr) else value
            if value is not None:
                problems = credential_problems(value, guessable=name in GUESSABLE_SECRETS)
                found += [f"{name.upper()}: {problem}" for problem in problems]
        admin = _text(self.relay_admin_token)
        for name in WEBHOOK_SECRETS if serves_webhooks else ():
            webhook = _text(getattr(self, name))
            if webhook is not None and admin is not None and opens_admin(webhook, admin):
                found.append(f"RELAY_ADMIN_TOKEN: must differ from {name.upper()} {ADMIN_APART}")
        return found

    def _auth_problems(self) -> list[str]:
        found: list[str] = []
        if (self.bringg_oauth_client_id is None) != (self.bringg_oauth_client_secret is None):
            found.append("BRINGG_OAUTH_CLIENT_ID and BRINGG_OAUTH_CLIENT_SECRET: set both or neither")
        configured = self.auth_methods
        if self.bringg_auth == "none" and configured:
            found.append(f"BRINGG_AUTH=none contradicts the configured method(s): {', '.join(configured)}")
        if self.bringg_auth is None and not configured:
            found.append(
                "BRINGG_WEBHOOK_TOKEN, BRINGG_JWT_SECRET or BRINGG_OAUTH_CLIENT_ID/SECRET: set at least one "
                "webhook authentication method (or BRINGG_AUTH=none to accept unauthenticated webhooks)"
            )
        return found

    @property
    def auth_methods(self) -> list[str]:
        """The webhook authentication methods configured, by name."""
        methods = []
        if self.bringg_webhook_token is not None:
            methods.append("token")
        if self.bringg_jwt_secret is not None:
            methods.append("jwt")
        if self.bringg_oauth_client_id is not None and self.bringg_oauth_client_secret is not None:
            methods.append("oauth")
        return methods


def load_settings(*, serves_webhooks: bool, runs_worker: bool) -> Settings:
    """Read and check the environment; raise SettingsError naming every problem (never a value)."""
    try:
        settings = Settings()
    except ValidationError as error:
        raise SettingsError([_describe(item) for item in error.errors()]) from None
    problems = settings.problems(serves_webhooks=serves_webhooks, runs_worker=runs_worker)
    if problems:
        raise SettingsError(problems)
    return settings


def credential_problems(value: str, *, guessable: bool) -> list[str]:
    """What is wrong with a credential or a name sent with one, each the end of a line (never the value)."""
    found: list[str] = []
    if value != value.strip():
        # Every credential would then fail: webhooks get 401 until Bringg blocks the URL.
        found.append("starts or ends with whitespace (a secret file's newline?); remove it")
    if not value.strip().isprintable():
        # A byte-order mark or zero-width space is invisible in every editor, and fails every request.
        found.append(
            "holds characters that are not printable (a byte-order mark, "
            "zero-width space or control character?); remove them"
        )
    if guessable and len(value.strip()) < MIN_SECRET_LENGTH:
        found.append(
            f"shorter than {MIN_SECRET_LENGTH} characters; use a long random value (openssl rand -hex 32)"
        )
    return found


def opens_admin(webhook_credential: str, admin_token: str) -> bool:
    """Whether a webhook credential would also pass as the admin token."""
    # The webhook authenticator also reads its header without a `Bearer ` scheme, as the admin API.
    return admin_token in (webhook_credential, _without_bearer(webhook_credential))


def _text(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def _without_bearer(credential: str) -> str:
    scheme, _, rest = credential.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else credential.strip()


def _describe(item: object) -> str:
    assert isinstance(item, dict)
    name = ".".join(str(part) for part in item.get("loc", ())).upper() or "settings"
    # The input value is left out on purpose: it may be a secret.
    message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{name}: {message}"
