"""Repair flows: a listener that has been offline too long can be removed from here."""

from __future__ import annotations

from homeassistant.components.repairs import ConfirmRepairFlow, RepairsFlow
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult

from .const import ISSUE_OFFLINE


class RemoveListenerFlow(ConfirmRepairFlow):
    """Confirm, then delete the listener's config entry, its device and entities."""

    def __init__(self, entry_id: str) -> None:
        """Remember which entry the issue is about."""
        super().__init__()
        self.entry_id = entry_id

    # The result's type is FlowResult up to Home Assistant 2025, RepairsFlowResult after.
    async def async_step_confirm(  # type: ignore[override, unused-ignore]
        self, user_input: dict[str, str] | None = None
    ) -> FlowResult:
        """Show the issue's text; on submit, remove the listener."""
        if user_input is not None and self.hass.config_entries.async_get_entry(self.entry_id):
            await self.hass.config_entries.async_remove(self.entry_id)
        return await super().async_step_confirm(user_input)  # type: ignore[return-value, unused-ignore]


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """Return the flow that fixes an issue; only the offline issue has one."""
    if issue_id.startswith(f"{ISSUE_OFFLINE}_") and data and isinstance(data["entry_id"], str):
        return RemoveListenerFlow(data["entry_id"])
    return ConfirmRepairFlow()
