"""Whose link it is: a link belongs to its merchant's tenant, and naming a tenant holds a link to it."""

from collections.abc import Iterable

from relay.tenants.tenant import Tenant


def merchant_tenant(tenants: Iterable[Tenant], merchant_id: int) -> Tenant | None:
    """The tenant whose merchant this is (the implicit tenant takes any), or None: no tenant's."""
    return next((tenant for tenant in tenants if tenant.sends_for(merchant_id)), None)


def link_refusal(tenants: Iterable[Tenant], merchant_id: int, *named: str | None) -> str | None:
    """Why a link of this merchant may not be saved for the tenants named (None names none), or None."""
    owner = merchant_tenant(tenants, merchant_id)
    for name in named:
        if name is not None and (owner is None or name != owner.name):
            return f"merchant {merchant_id} is not one of tenant {name}'s merchants"
    if owner is None:
        return f"merchant {merchant_id} is none of the tenants' merchants"
    return None
