"""The interface the listener publishes through; MQTT and stdout implement it."""

from abc import ABC, abstractmethod
from collections.abc import Callable

from sat_audio.publish.protocol import Payload

ListeningCallback = Callable[[bool], None]
"""Called (from the publisher's thread) when the privacy switch is set: True = listen."""
EnabledCallback = Callable[[str, bool], None]
"""Called (from the publisher's thread) when an event is switched: published key, True = on."""


class Publisher(ABC):
    """Receives what the listener has to say, in order; delivery is the publisher's job."""

    @abstractmethod
    def start(self, on_listening: ListeningCallback) -> None:
        """Begin delivering (connect in the background); commands arrive via `on_listening`."""

    @abstractmethod
    def info(self, payload: Payload) -> None: ...

    @abstractmethod
    def listening(self, on: bool) -> None: ...

    @abstractmethod
    def state(self, key: str, on: bool) -> None: ...

    @abstractmethod
    def transition(self, key: str, payload: Payload) -> None: ...

    @abstractmethod
    def scores(self, payload: Payload) -> None: ...

    @abstractmethod
    def level(self, source: str, level_dbfs: float) -> None: ...

    def on_enabled(self, callback: EnabledCallback) -> None:
        """Where the events' enable commands go (set before start); stdout has no commands."""
        return None

    def enabled(self, key: str, on: bool) -> None:
        """Report whether an event is enabled; implied by the transitions without a broker."""
        return None

    def active(self, payload: Payload) -> None:
        """The events on now; implied by the transitions without a broker."""
        return None

    def clip(self, name: str, data: bytes) -> str | None:
        """Send a clip's bytes: None once handed over, else why not."""
        return "no broker configured"

    @abstractmethod
    def close(self, timeout: float) -> bool:
        """Say goodbye, deliver what is queued within `timeout` s; True if nothing was left."""

    @property
    def dropped(self) -> int:
        """Transitions lost because the queue was full."""
        return 0

    @property
    def queued(self) -> int:
        """Transitions waiting for the broker."""
        return 0
