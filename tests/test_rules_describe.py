"""The rule's state in words, as the live view shows it: the answer to "why didn't it fire"."""

from dataclasses import replace

import numpy as np
import pytest

from sat_audio.rules import Detector
from tests.test_rules import BASE, chunks


def words(
    fields: dict,
    values: list[float],
    levels: list[float] | None = None,
    gate: float | None = None,
    listening: bool = True,
) -> str:
    """The state after feeding one chunk per value (1 s chunks)."""
    det = Detector([replace(BASE, **fields)], min_level_dbfs=gate, source="mic")
    for chunk in chunks(values, levels=levels):
        det.update(chunk)
    (rule,) = det.rules
    return rule.describe(listening)


@pytest.mark.parametrize(
    ("fields", "values", "levels", "gate", "listening", "expected"),
    [
        ({}, [], None, None, True, "waiting for audio"),
        ({}, [0.1, 0.4], None, None, True, "below on threshold"),
        ({"min_duration_s": 4}, [0.1, 0.6, 0.7], None, None, True, "above for 2 of 4 s"),
        ({"min_duration_s": 2.5}, [0.6], None, None, True, "above for 1 of 2.5 s"),
        # loud enough by score, but the chunk is quieter than the gate
        ({}, [0.9], [-60.0], -40.0, True, "below the volume gate"),
        ({"min_level_dbfs": -30}, [0.9], [-35.0], -40.0, True, "below the volume gate"),
        ({}, [0.9, 0.9], None, None, True, "on"),
        ({"hold_s": 10}, [0.9, 0.2, 0.2, 0.2], None, None, True, "on, holding 3 of 10 s"),
        # between off and on while on: not below off, so not holding
        ({"hold_s": 10}, [0.9, 0.2, 0.4], None, None, True, "on"),
        # ended at 1 s (the end of the last chunk above off), cooldown 10 s: 8 s left at 3 s
        ({"cooldown_s": 10}, [0.9, 0.1, 0.1], None, None, True, "cooldown 8 s left"),
        ({"cooldown_s": 2}, [0.9, 0.1, 0.1, 0.1], None, None, True, "below on threshold"),
        ({}, [0.9, 0.9], None, None, False, "paused"),
    ],
)
def test_state_in_words(fields, values, levels, gate, listening, expected):
    assert words(fields, values, levels, gate, listening) == expected


def test_switched_off_and_loud_events_in_words():
    loud = replace(BASE, key="loud", kind="loud", on_dbfs=-30.0, off_dbfs=-40.0, hold_s=2)
    det = Detector([replace(BASE, cooldown_s=10), loud], source="mic")
    assert [r.describe() for r in det.rules] == ["waiting for audio"] * 2
    det.set_enabled("glass", False)
    det.audio(np.full(16000, 0.1, np.float32))  # -20 dBFS for a second
    det.update(chunks([0.9])[0])
    assert [r.describe() for r in det.rules] == ["switched off", "on"]
    det.audio(np.zeros(16000, np.float32))
    assert det.rules[1].describe() == "on, holding 1 of 2 s"


def test_every_state_word_is_reached_by_one_stream():
    """One stream walks the rule through each state; the words follow it chunk by chunk."""
    event = replace(BASE, min_duration_s=2, hold_s=2, cooldown_s=3)
    det = Detector([event], min_level_dbfs=-40, source="mic")
    values = [0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9]
    levels = [-20.0] * 10 + [-50.0]
    seen = []
    for chunk in chunks(values, levels=levels):
        det.update(chunk)
        seen.append(det.rules[0].describe())
    assert seen == [
        "below on threshold",
        "above for 1 of 2 s",
        "on",
        "on",
        "on, holding 1 of 2 s",
        "cooldown 1 s left",  # ended at 4 s (the last chunk above off), cooldown to 7 s
        "cooldown just ended",  # above on, but the chunk began at 6 s, inside the cooldown
        "above for 1 of 2 s",
        "on",
        "on",
        "on, holding 1 of 2 s",  # below the gate counts as below off
    ]
