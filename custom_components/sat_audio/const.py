"""Constants shared by the SAT Audio integration's modules."""

from datetime import timedelta
from typing import Final

DOMAIN: Final = "sat_audio"
MANUFACTURER: Final = "SAT Audio"

CONF_TOPIC_PREFIX: Final = "topic_prefix"
CONF_LISTENER_ID: Final = "listener_id"
DEFAULT_TOPIC_PREFIX: Final = "sat_audio"

# Must match the "mqtt" topic in manifest.json: listeners on the default prefix are discovered.
DISCOVERY_TOPIC: Final = f"{DEFAULT_TOPIC_PREFIX}/+/info"
# Discovered listeners waiting for the user at once; more are dropped with a warning, so that a
# broker full of ids (a misconfigured fleet, a prank) cannot bury the user in notifications.
MAX_DISCOVERY_FLOWS: Final = 5

# Fired on the bus for every start and end; device triggers listen for it, the logbook shows it.
EVENT_SOUND: Final = f"{DOMAIN}_event"
TRIGGER_STARTED: Final = "started"
TRIGGER_ENDED: Final = "ended"
# A clip of the episode is in the media folder (v2 listeners that keep clips).
TRIGGER_CLIP: Final = "clip"

# How long the manual and reconfigure steps wait for the listener's retained info message.
INFO_WAIT_SECONDS: Final = 10.0

# A listener offline (or silent since setup) this long gets a repair issue.
OFFLINE_ISSUE_AFTER: Final = timedelta(minutes=10)
ISSUE_OFFLINE: Final = "listener_offline"
ISSUE_SOURCE_FAILED: Final = "source_failed"
ISSUE_PROTOCOL: Final = "unsupported_protocol"
