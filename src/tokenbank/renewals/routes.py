"""The renewals' admin routes: whether a user's allocation is due, and a batch now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Request
from pydantic import Field, StrictBool, StrictInt

from tokenbank.api.admin import AdminModel, admin_router
from tokenbank.api.auth import AdminKey
from tokenbank.api.responses import WITH_BODY, WITH_INPUT, errors
from tokenbank.api.schemas import UserIdPath
from tokenbank.api.state import get_services
from tokenbank.api.views import iso_utc_or_none
from tokenbank.renewals.results import RenewalBatchResult, RenewalEligibility, RenewalResult
from tokenbank.renewals.service import MAX_BATCH_LIMIT, MonthlyRenewalService

router = admin_router()


class RenewalRun(AdminModel):
    dry_run: StrictBool = False
    tier: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_BATCH_LIMIT)] | None = None


@router.get(
    "/users/{userId}/renewal",
    summary="Whether a user's plan allocation is due, and when the next one is",
    responses=errors(WITH_INPUT),
)
async def renewal_eligibility(
    request: Request, user_id: UserIdPath, principal: AdminKey
) -> dict[str, Any]:
    renewals = MonthlyRenewalService(get_services(request).tokens)
    return {"data": eligibility_json(await renewals.check_eligibility(user_id))}


@router.post(
    "/renewals/run",
    summary="Renew every due user now (or say who would get what, with dryRun)",
    responses=errors(WITH_BODY),
)
async def run_renewals(request: Request, body: RenewalRun, principal: AdminKey) -> dict[str, Any]:
    renewals = MonthlyRenewalService(get_services(request).tokens)
    batch = await renewals.renew_all_eligible(
        dry_run=body.dry_run, tier=body.tier, limit=body.limit
    )
    return {"data": batch_json(batch)}


def eligibility_json(found: RenewalEligibility) -> dict[str, Any]:
    return {
        "userId": found.user_id,
        "eligible": found.eligible,
        "reason": found.reason,
        "tier": found.tier,
        "nextRenewalDate": iso_utc_or_none(found.next_renewal_date),
        "daysUntilRenewal": found.days_until_renewal,
    }


def renewal_json(renewal: RenewalResult) -> dict[str, Any]:
    return {
        "userId": renewal.user_id,
        "tier": renewal.tier,
        "periodStart": iso_utc_or_none(renewal.period_start),
        "periodEnd": iso_utc_or_none(renewal.period_end),
        "tokensGranted": renewal.tokens_granted,
        "tokensCarried": renewal.tokens_carried,
        "tokensForfeited": renewal.tokens_forfeited,
        "expiresAt": iso_utc_or_none(renewal.expires_at),
        "newBalance": renewal.new_balance,
        "transactionId": renewal.transaction_id,
    }


def batch_json(batch: RenewalBatchResult) -> dict[str, Any]:
    return {
        "dryRun": batch.dry_run,
        "totalProcessed": batch.total_processed,
        "successful": batch.successful,
        "failed": batch.failed,
        "skipped": batch.skipped,
        "errors": [{"userId": e.user_id, "error": e.error} for e in batch.errors],
        "renewals": [renewal_json(renewal) for renewal in batch.renewals],
    }
