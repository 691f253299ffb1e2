"""The integration's metadata: what hassfest accepts, and the Home Assistant range it states."""

from __future__ import annotations

import json
from pathlib import Path
import re

from awesomeversion import AwesomeVersion

from homeassistant.const import MAJOR_VERSION, MINOR_VERSION, __version__ as HA_VERSION

ROOT = Path(__file__).resolve().parents[2]
INTEGRATION = ROOT / "custom_components" / "sat_audio"
# hassfest's schema for a custom integration's manifest takes these keys and no others: the
# supported range of Home Assistant cannot go there, so it is in hacs.json and the README.
MANIFEST_KEYS = {
    "domain", "name", "codeowners", "config_flow", "dependencies", "after_dependencies",
    "documentation", "integration_type", "iot_class", "issue_tracker", "mqtt", "requirements",
    "version", "quality_scale", "loggers", "single_config_entry", "import_executor",
}  # fmt: skip


def test_manifest_has_only_keys_hassfest_takes() -> None:
    """A key hassfest does not know fails HACS's validation of the repository."""
    manifest = json.loads((INTEGRATION / "manifest.json").read_text())
    assert set(manifest) <= MANIFEST_KEYS


def test_stated_range_covers_the_release_under_test() -> None:
    """hacs.json's minimum and the README's range include the Home Assistant running this."""
    minimum = AwesomeVersion(json.loads((ROOT / "hacs.json").read_text())["homeassistant"])
    assert AwesomeVersion(HA_VERSION) >= minimum
    readme = (INTEGRATION / "README.md").read_text()
    stated = re.search(r"\*\*Supported Home Assistant\*\*: (\S+) to (\S+) ", readme)
    assert stated is not None
    oldest, newest = (AwesomeVersion(version) for version in stated.groups())
    assert oldest == AwesomeVersion(f"{minimum.major}.{minimum.minor}")
    assert oldest <= AwesomeVersion(f"{MAJOR_VERSION}.{MINOR_VERSION}") <= newest
