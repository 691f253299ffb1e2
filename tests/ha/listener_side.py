"""Run by the listener's own Python (.venv, torch, sat_audio) for the Home Assistant tests.

The integration never imports sat_audio; its tests reach the listener only through this script
and the `sat-audio` command, both in the listener's environment.

    listener_side.py payloads               one JSON line per message the builders make
    listener_side.py checkpoint DIR LABEL   a SAT_T_2s checkpoint whose head always says LABEL
    listener_side.py wav PATH PATTERN       16 kHz: '_' a second of silence, 'X' a loud tone
    listener_side.py limits                 the protocol's limits and source states, as JSON
"""

import json
from pathlib import Path
import sys
import uuid

import numpy as np
from sat_audio.labels import all_labels, find
from sat_audio.publish import protocol as p
import soundfile as sf


def wire(payload: p.Payload) -> str:
    """Encode as the MQTT publisher does (compact JSON)."""
    return json.dumps(payload, separators=(",", ":"))


def payloads() -> None:
    """Print {"topic", "payload"} lines covering every topic and the payload variants."""
    topics = p.Topics("sat_audio", "kitchen")
    out: list[tuple[str, str]] = [
        (topics.status, p.ONLINE),
        (topics.status, p.OFFLINE),
        (topics.listening, p.ON),
        (topics.listening, p.OFF),
    ]
    sources = ["mic", "porch"]
    events = [
        p.PublishedEvent(
            p.event_key(source, "glass_breaking", len(sources)),
            source,
            f"Glass breaking ({source})",
            ("Glass", "Shatter"),
            0.45,
            0.3,
            clip=True,
        )
        for source in sources
    ]
    # A loud event: level alone, no labels, dBFS thresholds.
    loud = p.PublishedEvent(
        p.event_key("mic", "loud_noise", len(sources)),
        "mic",
        "Loud noise",
        (),
        0.0,
        0.0,
        kind="loud",
        clip=True,
        on_dbfs=-20.0,
        off_dbfs=-26.0,
    )
    info = p.info_payload(
        listener_id="kitchen",
        name="Kitchen",
        model="SAT_T_2s",
        chunk_s=2.0,
        listening=True,
        started=1_795_000_000.0,
        sources=[
            p.source_entry("mic", "mic", "ok", 0, 0.0, 0, None),
            p.source_entry("porch", "ffmpeg", "reconnecting", 3, 1.25, 2, "connection refused"),
            p.source_entry("hall", "stdin", "lagging", 12, 2.4, 0, None),
        ],
        events=[*events, loud],
        counters={"chunks": 10, "transitions": 2, "mqtt_dropped": 0, "mqtt_queued": 0},
        disabled=[loud.key],
        clips=p.clips_entry("flac", True, 100, 30.0, 200.0),
    )
    out.append((topics.info, wire(info)))
    out.append((topics.enabled(loud.key), p.OFF))
    out.append((topics.enabled(events[0].key), p.ON))
    out.append((topics.active, wire(p.active_payload([]))))
    out.append((topics.active, wire(p.active_payload([events[0].key, loud.key]))))
    for event in events:
        episode = uuid.uuid4().hex
        clip = p.clip_name(event.key, 1_795_000_010.5, episode, "flac")
        start = p.transition_payload(
            transition_id=episode,
            kind="start",
            event=event.key,
            source=event.source,
            label="Shatter",
            score=0.623456,
            peak=0.623456,
            start_wall=1_795_000_010.5,
            end_wall=None,
            duration_s=0.0,
            clip=clip,
        )
        end = p.transition_payload(
            transition_id=episode,
            kind="end",
            event=event.key,
            source=event.source,
            label="Glass",
            score=0.21,
            peak=0.91,
            start_wall=1_795_000_010.5,
            end_wall=1_795_000_014.0,
            duration_s=3.5,
            clip=clip,
            reason="quiet",
        )
        out += [(topics.event(event.key), wire(start)), (topics.state(event.key), p.ON)]
        out += [(topics.event(event.key), wire(end)), (topics.state(event.key), p.OFF)]
        out.append((topics.clip(clip), "fLaC"))
    episode = uuid.uuid4().hex
    for kind, reason in (("start", None), ("end", "disabled")):
        transition = p.transition_payload(
            transition_id=episode,
            kind=kind,
            event=loud.key,
            source="mic",
            label=None,
            score=-18.46,
            peak=-12.14,
            start_wall=1_795_000_020.0,
            end_wall=None if kind == "start" else 1_795_000_021.0,
            duration_s=0.0 if kind == "start" else 1.0,
            reason=reason,
        )
        out.append((topics.event(loud.key), wire(transition)))
    names = [label.name for label in all_labels()]
    rng = np.random.default_rng(0)
    for level in (-120.0, -32.46, 0.0):
        scores = p.scores_payload(
            source="mic",
            wall=1_795_000_012.0,
            level_dbfs=level,
            scores=rng.random(len(names)).astype(np.float32),
            names=names,
            top_k=5,
        )
        out.append((topics.scores, wire(scores)))
    for topic, payload in out:
        print(json.dumps({"topic": topic, "payload": payload}))


def checkpoint(folder: str, label: str) -> None:
    """Save a checkpoint that hears `label` in everything (the volume gate shapes episodes).

    It gets the upstream file name, which is how the listener tells the variant; prints the path.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.checkpoints import fire_label, random_model, save_upstream, upstream_name

    model = fire_label(random_model("SAT_T_2s", seed=2), find(label).index)
    print(save_upstream(model, Path(folder) / upstream_name("SAT_T_2s")))


def wav(path: str, pattern: str) -> None:
    """Write one second per character: '_' silence, 'X' a 440 Hz tone at about -13 dBFS."""
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    quiet = np.zeros(rate, np.float32)
    sf.write(path, np.concatenate([tone if c == "X" else quiet for c in pattern]), rate)


def limits() -> None:
    """Print the listener's side of the contract's limits (sat_audio/publish/protocol.py)."""
    names = [name for name in dir(p) if name.startswith("MAX_")]
    print(json.dumps({**{name: getattr(p, name) for name in names}, "states": p.SOURCE_STATES}))


if __name__ == "__main__":
    commands = {"payloads": payloads, "checkpoint": checkpoint, "wav": wav, "limits": limits}
    commands[sys.argv[1]](*sys.argv[2:])
