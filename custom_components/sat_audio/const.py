"""Constants shared by the SAT Audio integration's modules."""

from typing import Final

DOMAIN: Final = "sat_audio"
MANUFACTURER: Final = "SAT Audio"

CONF_TOPIC_PREFIX: Final = "topic_prefix"
CONF_LISTENER_ID: Final = "listener_id"
DEFAULT_TOPIC_PREFIX: Final = "sat_audio"

# Must match the "mqtt" topic in manifest.json: listeners on the default prefix are discovered.
DISCOVERY_TOPIC: Final = f"{DEFAULT_TOPIC_PREFIX}/+/info"

# Fired on the bus for every start and end; device triggers listen for it.
EVENT_SOUND: Final = f"{DOMAIN}_event"
TRIGGER_STARTED: Final = "started"
TRIGGER_ENDED: Final = "ended"

# How long the manual and reconfigure steps wait for the listener's retained info message.
INFO_WAIT_SECONDS: Final = 10.0
