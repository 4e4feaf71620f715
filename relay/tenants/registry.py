"""The running tenants: by name, by OAuth client id, and the one the bare webhook URL means."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from relay.bringg.auth import Authenticator
from relay.settings import Settings, SettingsError
from relay.tenants.file import read_tenants_file
from relay.tenants.tenant import IMPLICIT_TENANT, Tenant, implicit_tenant


@dataclass(frozen=True)
class RunningTenant:
    """A tenant as the relay runs it: its configuration, and the Authenticator of its webhook URL."""

    tenant: Tenant
    authenticator: Authenticator

    @property
    def name(self) -> str:
        return self.tenant.name


class TenantRegistry:
    """One set of tenants, never changed once built: a reload builds another and puts it in whole."""

    def __init__(self, tenants: Iterable[Tenant]) -> None:
        self._by_name = {
            tenant.name: RunningTenant(tenant, Authenticator(tenant.bringg)) for tenant in tenants
        }
        # Client ids are unique across tenants (the file is refused otherwise): the id picks the tenant.
        self._by_client_id = {
            running.authenticator.oauth_client_id: running
            for running in self._by_name.values()
            if running.authenticator.oauth_enabled and running.authenticator.oauth_client_id is not None
        }

    def __iter__(self) -> Iterator[RunningTenant]:
        return iter(self._by_name.values())

    def named(self, name: str) -> RunningTenant | None:
        """The tenant of that name, or None when no running tenant has it."""
        return self._by_name.get(name)

    def by_client_id(self, client_id: str) -> RunningTenant | None:
        """The tenant whose OAuth client this is, or None."""
        return self._by_client_id.get(client_id)

    def of_bare_url(self) -> RunningTenant | None:
        """`POST /webhooks/bringg`, the URL from before tenants: the tenant named `default`, if one runs."""
        return self.named(IMPLICIT_TENANT)

    @property
    def oauth_enabled(self) -> bool:
        """Whether any tenant authenticates by OAuth: else /oauth/token is not served."""
        return bool(self._by_client_id)


def load_tenants(settings: Settings, *, serves_webhooks: bool, runs_worker: bool) -> TenantRegistry:
    """RELAY_TENANTS_FILE's tenants, or the implicit one without it (SettingsError names every problem)."""
    if settings.relay_tenants_file is None:
        return TenantRegistry([implicit_tenant(settings)])
    return TenantRegistry(
        read_tenants_file(
            settings.relay_tenants_file, settings, serves_webhooks=serves_webhooks, runs_worker=runs_worker
        )
    )


class RunningTenants:
    """The registry in force. Read it once per request and keep no tenant from it: a reload replaces it."""

    def __init__(self, settings: Settings, *, serves_webhooks: bool, runs_worker: bool) -> None:
        self._settings = settings
        self._role = {"serves_webhooks": serves_webhooks, "runs_worker": runs_worker}
        # The start refused a file that does not validate: this reads one that did.
        self._registry = load_tenants(settings, **self._role)

    @property
    def registry(self) -> TenantRegistry:
        return self._registry

    def replace(self, registry: TenantRegistry) -> None:
        """Every request from now on sees `registry`; those in flight finish with the one they read."""
        self._registry = registry

    def reload(self) -> TenantRegistry:
        """RELAY_TENANTS_FILE read again and in force from now on; SettingsError (nothing changed) when it
        does not validate, or when there is no file (the implicit tenant's environment is read at start)."""
        if self._settings.relay_tenants_file is None:
            raise SettingsError(
                ["RELAY_TENANTS_FILE is not set: the one tenant is the environment's, read at start only"]
            )
        registry = load_tenants(self._settings, **self._role)
        self.replace(registry)
        return registry
