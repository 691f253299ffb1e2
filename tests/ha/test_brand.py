"""The integration's own brand images, as Home Assistant serves them (2026.3 and later)."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path

import pytest
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

BRAND = Path(__file__).resolve().parents[2] / "custom_components" / "sat_audio" / "brand"

# Older releases take brand images only from the home-assistant/brands repository.
pytest.importorskip("homeassistant.components.brands")


@pytest.mark.parametrize("image", ["icon.png", "logo.png", "dark_logo.png", "icon@2x.png"])
async def test_brand_images_served(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, image: str
) -> None:
    """Home Assistant's brands endpoint answers with the images in brand/, not a placeholder."""
    assert await async_setup_component(hass, "brands", {})
    client = await hass_client()
    response = await client.get(f"/api/brands/integration/sat_audio/{image}")
    assert response.status == HTTPStatus.OK
    assert await response.read() == (BRAND / image).read_bytes()
