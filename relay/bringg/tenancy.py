"""A webhook judged for the tenant it came in for: a merchant not of that tenant's is quarantined."""

from relay.domain.judgement import Judgement, reported
from relay.tenants.tenant import Tenant


def judged_for(tenant: Tenant, judgement: Judgement) -> Judgement:
    """The judgement as it stands when the tenant sends for its merchant (or none was read); else quarantined,
    the reason first, so that it is never forwarded onto the tenant's Quivo account."""
    merchant_id = judgement.merchant_id
    if merchant_id is None or tenant.sends_for(merchant_id):
        return judgement
    reason = f"merchant {merchant_id} is not one of tenant {tenant.name}'s merchants"
    return Judgement(
        "quarantined",
        judgement.webhook_type,
        merchant_id,
        judgement.rating_id,
        errors=reported([reason, *judgement.errors]),
    )
