"""No broker configured: each transition (and scores, if enabled) as one JSON line on stdout."""

import sys
from typing import TextIO

from sat_audio.publish.base import ListeningCallback, Publisher
from sat_audio.publish.protocol import Payload, to_json


class StdoutPublisher(Publisher):
    """Prints the same transition and scores payloads MQTT would carry, one per line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def _write(self, payload: Payload) -> None:
        self._stream.write(to_json(payload) + "\n")
        self._stream.flush()

    def start(self, on_listening: ListeningCallback) -> None:
        """Nothing to connect to, and no command channel."""

    def info(self, payload: Payload) -> None:
        """The listener logs its configuration; stdout carries events only."""

    def listening(self, on: bool) -> None:
        """There is no switch without a broker."""

    def state(self, key: str, on: bool) -> None:
        """States are implied by the transitions."""

    def transition(self, key: str, payload: Payload) -> None:
        self._write(payload)

    def scores(self, payload: Payload) -> None:
        self._write(payload)

    def level(self, source: str, level_dbfs: float) -> None:
        """The level is in the scores lines when those are enabled."""

    def close(self, timeout: float) -> bool:
        self._stream.flush()
        return True
