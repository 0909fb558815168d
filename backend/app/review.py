"""An admin's settlement of a unit whose annotators tied in a campaign: it replaces their votes in its verdict there."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation.aggregate import Settlement
from backend.app.campaign import default_campaign
from backend.app.categories import resolve_category
from backend.app.errors import TaskError
from backend.app.results import annotators_verdict
from backend.db.models import Campaign, Unit, UnitSettlement


def settle_unit(db: Session, unit_id: int, answer: str, category: str, admin_id: int,
                campaign_id: int | None = None) -> Settlement:
    """Store the admin's answer (and category, for a yes) for `unit_id` in the campaign (None: its run's
    default campaign), committed; returns it.

    Only a tie is settled: a unit with all its answers whose votes left the answer or the category open.
    A settlement overrules people only where they could not decide."""
    unit = db.get(Unit, unit_id)
    if unit is None:
        raise TaskError(f"There is no unit {unit_id}.", 404)
    campaign = default_campaign(db, unit.layer.run_id) if campaign_id is None else db.get(Campaign, campaign_id)
    if campaign is None:
        raise TaskError(f"campaign: there is no campaign {campaign_id}." if campaign_id is not None else
                        f"Unit {unit_id}'s run is in no campaign: nothing to settle.", 404)
    votes = annotators_verdict(db, unit_id, campaign)
    if votes is None or not votes.unresolved:
        state = "does not have all its answers yet" if votes is None else "has a verdict its annotators agreed on"
        raise TaskError(f"Unit {unit_id} {state}: only ties are settled.", 409)
    try:   # annotation.aggregate's rule: a category exactly when the answer is yes
        decision = Settlement(answer, category.strip() or None if answer == "yes" else None)
    except ValueError as error:
        raise TaskError(f"The settlement was not saved: {error}.") from None
    category_row = resolve_category(db, decision.category) if decision.category else None
    settlement = db.scalar(select(UnitSettlement).where(UnitSettlement.campaign_id == campaign.id,
                                                        UnitSettlement.unit_id == unit_id))
    if settlement is None:
        settlement = UnitSettlement(campaign_id=campaign.id, unit_id=unit_id)
        db.add(settlement)
    settlement.answer, settlement.admin_id = answer, admin_id
    settlement.category_id = category_row.id if category_row else None
    db.commit()
    return Settlement(answer, category_row.name if category_row else None)
