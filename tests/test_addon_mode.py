"""Add-on mode against a local HTTP server that answers like the Supervisor's /services/mqtt.

Every option of addon/config.yaml is shown to reach the listener's Config, every kind of bad
option to stop the add-on with one line naming it, and every answer the Supervisor can give
(credentials, none, TLS, service missing, refused, down) to end in a broker or a clear line.
"""

import copy
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from sat_audio import addon
from sat_audio.config import ConfigError, default_config_text, parse_config
from sat_audio.errors import SatAudioError
from sat_audio.publish.protocol import MAX_TEXT
from tests.broker import free_port
from tests.waiting import PATIENCE_S

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = yaml.safe_load((ROOT / "addon" / "config.yaml").read_text(encoding="utf-8"))
DEFAULTS: dict[str, Any] = MANIFEST["options"]
TOKEN = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
MOSQUITTO_ANSWER = {
    "result": "ok",
    "data": {
        "host": "core-mosquitto",
        "port": 1883,
        "ssl": False,
        "protocol": "3.1.1",
        "username": "addons",
        "password": "Ohx${HOME}9ae",
        "addon": "core_mosquitto",
    },
}


class FakeSupervisor:
    """http.server on 127.0.0.1 that answers /services/mqtt with a set status and JSON body."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = MOSQUITTO_ANSWER
        self.requests: list[tuple[str, str | None]] = []
        supervisor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                supervisor.requests.append((self.path, self.headers.get("Authorization")))
                if self.path != "/services/mqtt":
                    status, body = 404, {"result": "error", "message": "404: Not Found"}
                else:
                    status, body = supervisor.status, supervisor.body
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, status: int, body: Any) -> None:
        self.status, self.body = status, body


@pytest.fixture
def supervisor() -> Iterator[FakeSupervisor]:
    fake = FakeSupervisor()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def write_options(folder: Path, options: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "options.json"
    path.write_text(json.dumps(options), encoding="utf-8")
    return path


def load(tmp_path: Path, supervisor: FakeSupervisor, **changes: Any):
    """The Config add-on mode builds from the default options with these changes."""
    options = {**copy.deepcopy(DEFAULTS), **changes}
    write_options(tmp_path, options)
    return addon.load(None, supervisor.url, tmp_path, TOKEN)


def with_event(**fields: Any) -> list[dict[str, Any]]:
    """The default events with the first one changed (None removes a field)."""
    events = copy.deepcopy(DEFAULTS["events"])
    events[0].update(fields)
    events[0] = {k: v for k, v in events[0].items() if v is not None}
    return events


# --- the Supervisor's answers ----------------------------------------------------------------


def test_broker_with_credentials(tmp_path, supervisor):
    config = load(tmp_path, supervisor)
    assert supervisor.requests == [("/services/mqtt", f"Bearer {TOKEN}")]
    mqtt = config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.username, mqtt.tls) == (
        "core-mosquitto",
        1883,
        "addons",
        None,
    )
    assert mqtt.password == "Ohx${HOME}9ae"  # taken literally, not expanded from the environment
    assert mqtt.topic_prefix == "sat_audio"


def test_broker_without_credentials(tmp_path, supervisor):
    supervisor.answer(200, {"result": "ok", "data": {"host": "10.0.0.2", "port": 1884}})
    mqtt = load(tmp_path, supervisor).mqtt
    assert (mqtt.host, mqtt.port, mqtt.username, mqtt.password) == ("10.0.0.2", 1884, None, None)


def test_broker_with_tls(tmp_path, supervisor):
    data = {**MOSQUITTO_ANSWER["data"], "ssl": True, "port": 8883}
    supervisor.answer(200, {"result": "ok", "data": data})
    mqtt = load(tmp_path, supervisor).mqtt
    assert mqtt.port == 8883
    assert mqtt.tls is not None and mqtt.tls.ca is None and not mqtt.tls.insecure


NOT_ENABLED = {"result": "error", "message": "Service not enabled"}


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            NOT_ENABLED,
            "no MQTT broker is available: install and start the Mosquitto broker add-on, then "
            "restart this add-on (Supervisor: Service not enabled)",
        ),
        (
            403,
            {"result": "error", "message": "No access to mqtt service!"},
            "the Supervisor refused the MQTT service to this add-on (HTTP 403) "
            "(Supervisor: No access to mqtt service!)",
        ),
        (
            401,
            b"401: Unauthorized",
            "the Supervisor refused the MQTT service to this add-on (HTTP 401)",
        ),
        (
            404,
            {"result": "error", "message": "Service does not exist"},
            "the Supervisor has no MQTT service (HTTP 404) (Supervisor: Service does not exist)",
        ),
        (500, b"", "the Supervisor answered HTTP 500 for the MQTT service"),
        (200, b"<html>", "the Supervisor's MQTT service answer is not JSON"),
        (
            200,
            {"result": "ok", "data": {"port": 1883}},
            "the Supervisor's MQTT service answer names no broker host and port",
        ),
    ],
)
def test_supervisor_errors(tmp_path, supervisor, status, body, message):
    supervisor.answer(status, body)
    with pytest.raises(addon.BrokerError) as err:
        load(tmp_path, supervisor)
    assert str(err.value) == message


def test_no_token(tmp_path, supervisor, monkeypatch):
    monkeypatch.delenv("SUPERVISOR_TOKEN", raising=False)
    write_options(tmp_path, DEFAULTS)
    with pytest.raises(addon.BrokerError) as err:
        addon.load(None, supervisor.url, tmp_path)
    assert str(err.value) == (
        "SUPERVISOR_TOKEN is not set, so the Supervisor cannot be asked for the MQTT broker; "
        "add-on mode runs only inside Home Assistant"
    )
    assert supervisor.requests == []


def test_supervisor_down(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    write_options(tmp_path, DEFAULTS)
    with pytest.raises(addon.BrokerError) as err:
        addon.load(None, url, tmp_path, TOKEN)
    assert str(err.value).startswith(f"cannot reach the Supervisor at {url} (")


def test_token_comes_from_the_environment(tmp_path, supervisor, monkeypatch):
    monkeypatch.setenv("SUPERVISOR_TOKEN", "abc123")
    write_options(tmp_path, DEFAULTS)
    addon.load(None, supervisor.url, tmp_path)
    assert supervisor.requests == [("/services/mqtt", "Bearer abc123")]


# --- every option ----------------------------------------------------------------------------


def test_defaults_are_the_listeners_own(tmp_path, supervisor):
    """Where the add-on and the listener's config.yaml overlap, their defaults agree (onnx, which
    the add-on's image must have: it has no torch)."""
    config = load(tmp_path, supervisor)
    listener = parse_config(yaml.safe_load(default_config_text()))
    assert config.detection == listener.detection
    assert config.model.name == listener.model.name
    assert config.model.chunk_seconds == listener.model.chunk_seconds
    assert config.model.threads == listener.model.threads
    assert config.model.backend == listener.model.backend == "onnx"
    assert config.model.precision == listener.model.precision
    assert config.listener.id == listener.listener.id
    assert config.logging == listener.logging
    assert config.mqtt.topic_prefix == "sat_audio"
    assert config.sources == listener.sources
    assert config.model.dir == str(tmp_path / "models")


@pytest.mark.parametrize(
    ("changes", "where", "value"),
    [
        ({"model": "SAT_T_1s"}, lambda c: c.model.name, "SAT_T_1s"),
        ({"chunk_seconds": 1.5}, lambda c: c.model.chunk_seconds, 1.5),
        ({"device": "3"}, lambda c: c.sources[0].device, 3),
        (
            {"device": "USB Audio"},
            lambda c: (c.sources[0].kind, c.sources[0].device),
            ("mic", "USB Audio"),
        ),
        ({"device": ""}, lambda c: c.sources[0].device, None),
        (
            {"stream_url": "rtsp://u:p@cam.local/s"},
            lambda c: (c.sources[0].kind, c.sources[0].url),
            ("ffmpeg", "rtsp://u:p@cam.local/s"),
        ),
        ({"min_level_dbfs": -45}, lambda c: c.detection.min_level_dbfs, -45.0),
        ({"topic_prefix": "home/sound"}, lambda c: c.mqtt.topic_prefix, "home/sound"),
        ({"listener_id": "kitchen_2"}, lambda c: c.listener.id, "kitchen_2"),
        ({"threads": 4}, lambda c: c.model.threads, 4),
        ({"backend": "torch"}, lambda c: c.model.backend, "torch"),
        ({"backend": "onnx", "precision": "int8"}, lambda c: c.model.runtime, "onnx int8"),
        ({"log_level": "debug"}, lambda c: c.logging.level, "debug"),
        ({"clips_format": "opus"}, lambda c: c.clips.format, "opus"),
        ({"clips_publish": False}, lambda c: c.clips.publish, False),
        ({"clips_max_count": 7}, lambda c: c.clips.max_count, 7),
        ({"clips_max_age_days": 1.5}, lambda c: c.clips.max_age_days, 1.5),
        ({"clips_max_total_mb": 20}, lambda c: c.clips.max_total_mb, 20.0),
    ],
)
def test_option_reaches_the_config(tmp_path, supervisor, changes, where, value):
    assert where(load(tmp_path, supervisor, **changes)) == value


def test_optional_options_left_out(tmp_path, supervisor):
    options = {k: v for k, v in DEFAULTS.items() if k != "min_level_dbfs"}
    write_options(tmp_path, options)
    config = addon.load(None, supervisor.url, tmp_path, TOKEN)
    assert config.detection.min_level_dbfs is None  # empty means no gate
    assert config.model.chunk_seconds is None  # the model's own


def test_every_event_field(tmp_path, supervisor):
    event = {
        "name": "Water left on",
        "id": "water",
        "labels": "water tap, FAUCET, /m/0130jx, Bathtub (filling or washing)",
        "on_threshold": 0.5,
        "off_threshold": 0.2,
        "min_duration_s": 30,
        "hold_s": 12.5,
        "cooldown_s": 60,
        "smoothing": "ema",
        "smoothing_chunks": 4,
    }
    (ev,) = load(tmp_path, supervisor, events=[event]).detection.events
    assert ev.key == "water"
    assert ev.name == "Water left on"
    assert ev.labels == (
        "Water tap, faucet",
        "Sink (filling or washing)",
        "Bathtub (filling or washing)",
    )
    assert (ev.on_threshold, ev.off_threshold) == (0.5, 0.2)
    assert (ev.min_duration_s, ev.hold_s, ev.cooldown_s) == (30.0, 12.5, 60.0)
    assert (ev.smoothing, ev.smoothing_chunks) == ("ema", 4)


LOUD = {"kind": "loud", "labels": None, "on_threshold": None, "off_threshold": None}
"""What makes the first default event a loud one, but for its level."""


def test_loud_event_switch_and_clip_fields(tmp_path, supervisor):
    events = with_event(
        **LOUD, on_dbfs=-20, off_dbfs=-32.5, enabled=False, clip_pre_s=3, clip_post_s=1.5,
        clip_post_from="start",
    )  # fmt: skip
    config = load(tmp_path, supervisor, events=events)
    ev = config.detection.events[0]
    got = (ev.kind, ev.labels, ev.on_dbfs, ev.off_dbfs, ev.enabled)
    assert got == ("loud", (), -20.0, -32.5, False)
    assert ev.clip is not None
    assert (ev.clip.pre_s, ev.clip.post_s, ev.clip.post_from) == (3.0, 1.5, "start")
    assert config.detection.events[1].clip is None  # no clip field: no clips
    assert config.clips.dir == str(tmp_path / "clips")


def test_clip_defaults(tmp_path, supervisor):
    (ev,) = load(tmp_path, supervisor, events=with_event(clip_post_s=2)[:1]).detection.events
    assert ev.clip is not None and (ev.clip.pre_s, ev.clip.post_from) == (5.0, "end")
    assert load(tmp_path, supervisor).clips.max_count == 100  # empty: the listener's default


def test_event_id_from_name_and_field_defaults(tmp_path, supervisor):
    event = {"name": "Glass — broken!", "labels": "Shatter", "on_threshold": 0.4}
    (ev,) = load(tmp_path, supervisor, events=[event]).detection.events
    assert (ev.key, ev.name, ev.labels) == ("glass_broken", "Glass — broken!", ("Shatter",))
    assert ev.off_threshold == pytest.approx(0.3)  # the listener's default: 3/4 of on
    assert (ev.hold_s, ev.min_duration_s, ev.cooldown_s, ev.smoothing) == (2.0, 0.0, 0.0, None)


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("Glass, Shatter", ["Glass", "Shatter"]),
        ("Water tap, faucet", ["Water tap, faucet"]),
        ("Shatter,Smash, crash,glass", ["Shatter", "Smash, crash", "glass"]),
        ("Glas, /m/0130jx, custom:doorbell", ["Glas", "/m/0130jx", "custom:doorbell"]),
        ("Baby cry, infant cry, Crying, sobbing", ["Baby cry, infant cry", "Crying, sobbing"]),
    ],
)
def test_split_labels(text, labels):
    """Only split: each label is checked, and spelt one way, by the listener's schema."""
    assert addon.split_labels(text) == labels


def test_start_up_line_names_the_input_and_masks_secrets(tmp_path, supervisor):
    line = addon.describe(load(tmp_path, supervisor, device="0"))
    assert ", audio input 0, events glass_breaking, running_water," in line
    assert line.endswith("; MQTT core-mosquitto:1883 as addons")
    line = addon.describe(load(tmp_path, supervisor, stream_url="rtsp://cam:s3cret@cam.local/s"))
    assert "rtsp://cam:***@cam.local/s, events" in line
    assert "s3cret" not in line and "Ohx" not in line


# --- bad options: one line naming the option -------------------------------------------------
# The listener's schema words each problem (as in tests/test_config_errors.py); the add-on only
# names the option the key came from.

E0 = "option 'events[0] (glass_breaking)"
LONG_NAME = "n" * (MAX_TEXT + 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model": "SAT_X"},
            "option 'model': unknown model 'SAT_X'; did you mean 'SAT_T_2s'? expected one of "
            f"{', '.join(addon.registry())}, a checkpoint file (.pt) or an http(s) URL",
        ),
        (
            {"chunk_seconds": 70},
            "option 'chunk_seconds': expected a number from 0.16 to 60, got 70",
        ),
        (
            {"chunk_seconds": "2"},
            "option 'chunk_seconds': expected a number from 0.16 to 60, got '2'",
        ),
        (
            {"device": True},
            "option 'device': expected a device index (0, 1, ...) or a device name, got true",
        ),
        (
            {"stream_url": 5},
            "option 'stream_url': expected a non-empty string, got 5",
        ),
        (
            {"device": "USB", "stream_url": "rtsp://cam/s"},
            "option 'stream_url': set either device or stream_url, not both",
        ),
        ({"events": []}, "option 'events': set at least one event"),
        ({"events": "glass"}, "option 'events': set at least one event"),
        ({"events": ["glass"]}, "option 'events[0]': must be a mapping, got 'glass'"),
        ({"events": with_event(name="")}, "option 'events[0].name': is required"),
        (
            {"events": with_event(name="!!!")},
            "option 'events[0].id': name '!!!' gives no id; set one (like glass_breaking)",
        ),
        (
            {"events": with_event(id="Bad Id")},
            "option 'events[0].id': expected an event key that is a slug of lowercase letters, "
            "digits and _ (like glass_breaking), got 'Bad Id'",
        ),
        (
            {"events": with_event(labels=None)},
            f"{E0}.labels': is required: AudioSet names, separated by commas",
        ),
        (
            {"events": with_event(labels="Glas")},
            f"{E0}.labels': unknown AudioSet label 'Glas'; did you mean 'Glass', 'Gasp', 'Gears'?",
        ),
        (
            {"events": with_event(labels="Glass,, Shatter")},
            f"{E0}.labels': empty label name in 'Glass,, Shatter'",
        ),
        (
            {"events": with_event(labels="Glass, glass")},
            f"{E0}.labels': 'glass' is 'Glass', already listed; expected each label once",
        ),
        (
            {"events": with_event(colour="red")},
            f"{E0}.colour': unknown key 'colour'; expected one of ",
        ),
        (
            {"events": with_event(on_threshold=None)},
            f"{E0}.on_threshold': missing; expected a number above 0 and at most 1",
        ),
        (
            {"events": with_event(on_threshold=0)},
            f"{E0}.on_threshold': expected a number above 0 and at most 1, got 0",
        ),
        (
            {"events": with_event(on_threshold=1.5)},
            f"{E0}.on_threshold': expected a number above 0 and at most 1, got 1.5",
        ),
        (
            {"events": with_event(off_threshold=0.5)},
            f"{E0}.off_threshold': expected less than on_threshold (0.35) for hysteresis, got 0.5",
        ),
        (
            {"events": with_event(off_threshold=0)},
            f"{E0}.off_threshold': expected a number above 0 and at most 1, got 0",
        ),
        (
            {"events": with_event(hold_s=-1)},
            f"{E0}.hold_s': expected a number from 0 to 3600, got -1",
        ),
        (
            {"events": with_event(min_duration_s=True)},
            f"{E0}.min_duration_s': expected a number from 0 to 3600, got true",
        ),
        (
            {"events": with_event(cooldown_s=90000)},
            f"{E0}.cooldown_s': expected a number from 0 to 86400, got 90000",
        ),
        (
            {"events": with_event(smoothing="mean")},
            f"{E0}.smoothing': expected one of none, ema, median, got 'mean'",
        ),
        (
            {"events": with_event(smoothing_chunks=0)},
            f"{E0}.smoothing_chunks': expected an integer from 1 to 100, got 0",
        ),
        (
            {"events": [*DEFAULTS["events"], DEFAULTS["events"][0]]},
            "option 'events[8]': id 'glass_breaking' is used by an earlier event",
        ),
        (
            {"events": with_event(id="glass", name=LONG_NAME)},
            f"option 'events': event name '{LONG_NAME[:56]}... is published with "
            f"{MAX_TEXT + 1} characters; expected at most {MAX_TEXT}",
        ),
        (
            {"events": with_event(labels=None)},
            f"{E0}.labels': is required: AudioSet names, separated by commas",
        ),
        (
            {"events": with_event(kind="loud", labels=None, on_threshold=None, off_threshold=None)},
            f"{E0}.on_dbfs': missing; expected a level in dBFS from -120 to 0",
        ),
        (
            {"events": with_event(kind="loud", on_dbfs=-20)},
            f"{E0}.labels': a loud event (kind: loud) is defined by its level alone; expected "
            "no labels",
        ),
        (
            {"events": with_event(kind="noise")},
            f"{E0}.kind': expected one of sound, loud, got 'noise'",
        ),
        (
            {"events": with_event(**LOUD, on_dbfs=-20, off_dbfs=-10)},
            f"{E0}.off_dbfs': expected less than on_dbfs (-20) for hysteresis, got -10",
        ),
        (
            {"events": with_event(enabled="yes")},
            f"{E0}.enabled': expected true or false, got 'yes'",
        ),
        (
            {"events": with_event(clip_pre_s=90)},
            f"{E0}.clip_pre_s': expected a number from 0 to 60, got 90",
        ),
        (
            {"events": with_event(clip_post_s=-1)},
            f"{E0}.clip_post_s': expected a number from 0 to 60, got -1",
        ),
        (
            {"events": with_event(clip_post_from="middle")},
            f"{E0}.clip_post_from': expected one of end, start, got 'middle'",
        ),
        ({"clips_format": "mp3"}, "option 'clips_format': expected one of flac, opus, got 'mp3'"),
        ({"clips_publish": "no"}, "option 'clips_publish': expected true or false, got 'no'"),
        (
            {"clips_max_count": 0},
            "option 'clips_max_count': expected an integer from 1 to 100000, got 0",
        ),
        (
            {"clips_max_age_days": 0},
            "option 'clips_max_age_days': expected a number above 0 and at most 36500, got 0",
        ),
        (
            {"clips_max_total_mb": -5},
            "option 'clips_max_total_mb': expected a number above 0, got -5",
        ),
        (
            {"min_level_dbfs": -130},
            "option 'min_level_dbfs': expected a number from -120 to 0, got -130",
        ),
        (
            {"topic_prefix": "a/#"},
            "option 'topic_prefix': expected an MQTT topic prefix without +, # or a "
            "leading/trailing /, got 'a/#'",
        ),
        (
            {"topic_prefix": "sat_audio/"},
            "option 'topic_prefix': expected an MQTT topic prefix without +, # or a "
            "leading/trailing /, got 'sat_audio/'",
        ),
        (
            {"listener_id": "Kitchen"},
            "option 'listener_id': expected a slug of lowercase letters, digits and _ "
            "(like kitchen_2), got 'Kitchen'",
        ),
        ({"threads": 0}, "option 'threads': expected an integer from 1 to 64, got 0"),
        ({"threads": 2.5}, "option 'threads': expected an integer from 1 to 64, got 2.5"),
        (
            {"backend": "tflite"},
            "option 'backend': expected one of torch, onnx, got 'tflite'",
        ),
        (
            {"backend": "onnx", "precision": "int4"},
            "option 'precision': expected one of float32, int8, got 'int4'",
        ),
        (
            {"backend": "torch", "precision": "int8"},
            "option 'precision': int8 needs backend: onnx (torch runs float32 only)",
        ),
        (
            {"log_level": "loud"},
            "option 'log_level': expected one of debug, info, warning, error, got 'loud'",
        ),
    ],
)
def test_bad_option(tmp_path, supervisor, changes, message):
    supervisor.answer(400, NOT_ENABLED)  # the option is reported first, broker or not
    with pytest.raises(ConfigError) as err:
        load(tmp_path, supervisor, **changes)
    if message.endswith("expected one of "):  # the list of keys grows with the listener's
        assert str(err.value).startswith(message)
    else:
        assert str(err.value) == message
    assert supervisor.requests == []


def test_torch_backend_without_torch(tmp_path, supervisor, monkeypatch):
    """The add-on's image has no torch: choosing it stops the add-on with one line, before the
    broker is asked. scripts/build-addon-image shows it in the real image."""
    monkeypatch.setattr(addon, "torch_installed", lambda: False)
    assert load(tmp_path, supervisor).model.backend == "onnx"
    asked = len(supervisor.requests)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, supervisor, backend="torch")
    assert len(supervisor.requests) == asked
    assert str(err.value) == (
        "option 'backend': torch is not in this add-on's image, which runs onnx (an image built "
        "with the TORCH_PACKAGE build argument has torch)"
    )


def test_missing_required_option(tmp_path, supervisor):
    write_options(tmp_path, {k: v for k, v in DEFAULTS.items() if k != "listener_id"})
    with pytest.raises(ConfigError) as err:
        addon.load(None, supervisor.url, tmp_path, TOKEN)
    assert str(err.value) == (
        "option 'listener_id': expected a slug of lowercase letters, digits and _ "
        "(like kitchen_2), got null"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "add-on options {path} not found; add-on mode runs inside Home Assistant"),
        ("[1, 2]", "add-on options {path} hold list, not an object"),
        (
            "{",
            "add-on options {path} are not readable JSON (Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1))",
        ),
    ],
)
def test_options_file(tmp_path, content, message):
    path = tmp_path / "options.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        addon.read_options(path)
    assert str(err.value) == message.format(path=path)


def test_every_schema_option_is_tested():
    """Each option of the manifest appears in the tests above, set and broken."""
    text = Path(__file__).read_text(encoding="utf-8")
    for key in MANIFEST["schema"]:
        assert text.count(f'"{key}"') >= 2 or text.count(f"{key}=") >= 2, key
    for field in MANIFEST["schema"]["events"][0]:
        assert f"{field}=" in text, field


# --- the onnx backend: exported by the add-on itself -----------------------------------------


def test_onnx_export_once_per_version(tmp_path, supervisor, sat_t_checkpoint):
    """A real export in a child process; later starts of the same version reuse the file."""
    from sat_audio.model.onnx_runtime import OnnxScorer

    config = load(tmp_path, supervisor, backend="onnx")
    models = Path(config.model.dir)
    models.mkdir()
    shutil.copy(sat_t_checkpoint, models / sat_t_checkpoint.name)  # no download here
    path = addon.prepare_onnx(config.model)
    assert path == models / sat_t_checkpoint.with_suffix(".onnx").name
    assert OnnxScorer(path).spec.name == "SAT_T_2s"
    stamp = path.with_name(path.name + ".version")
    assert stamp.read_text() == f"{addon.__version__}\n"
    written = path.stat().st_mtime_ns
    assert addon.prepare_onnx(config.model) == path
    assert path.stat().st_mtime_ns == written  # the same version: not exported again
    stamp.write_text("0.0.9\n")  # written by an earlier add-on version
    addon.prepare_onnx(config.model)
    assert path.stat().st_mtime_ns != written
    assert stamp.read_text() == f"{addon.__version__}\n"


def test_onnx_int8_export_sits_beside_the_float32_one(tmp_path, supervisor, sat_t_checkpoint):
    from sat_audio.model.onnx_runtime import OnnxScorer

    config = load(tmp_path, supervisor, backend="onnx", precision="int8")
    models = Path(config.model.dir)
    models.mkdir()
    shutil.copy(sat_t_checkpoint, models / sat_t_checkpoint.name)
    path = addon.prepare_onnx(config.model)
    assert path == models / sat_t_checkpoint.with_suffix(".int8.onnx").name
    assert OnnxScorer(path, precision="int8").spec.name == "SAT_T_2s"
    assert path.with_name(path.name + ".version").read_text() == f"{addon.__version__}\n"
    assert not path.with_suffix("").with_suffix(".onnx").exists()  # float32 is not made


def test_onnx_export_failure_is_one_line(tmp_path, supervisor, capfd):
    config = load(tmp_path, supervisor, backend="onnx")
    models = Path(config.model.dir)
    models.mkdir()
    checkpoint = models / addon.registry()["SAT_T_2s"].file
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(SatAudioError) as err:
        addon.prepare_onnx(config.model)
    message = str(err.value)
    assert message.startswith(
        f"exporting SAT_T_2s for the onnx backend failed: checkpoint {checkpoint} "
    )
    assert "\n" not in message and "Traceback" not in message
    assert "error" not in capfd.readouterr().err  # the child's own error line is not repeated
    assert checkpoint.read_bytes() == b"not a checkpoint"  # left for the user to look at
    assert not list(models.glob("*.onnx*"))


# --- the command line ------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sat_audio", *args],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        env=env,
        cwd=ROOT,
    )


def test_cli_bad_option_is_one_line(tmp_path, supervisor):
    write_options(tmp_path, {**DEFAULTS, "threads": 65})
    done = run_cli("addon", "--supervisor", supervisor.url, "--data", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == (
        "sat-audio: error: option 'threads': expected an integer from 1 to 64, got 65\n"
    )


def test_cli_missing_broker_is_one_line(tmp_path, supervisor):
    supervisor.answer(400, NOT_ENABLED)
    write_options(tmp_path, DEFAULTS)
    env = {"SUPERVISOR_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    done = run_cli("addon", "--supervisor", supervisor.url, "--data", str(tmp_path), env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "sat-audio: error: no MQTT broker is available: install and start the Mosquitto broker "
        "add-on, then restart this add-on (Supervisor: Service not enabled)"
    ]


# --- health ----------------------------------------------------------------------------------


class Counting:
    """Stands in for the listener: only its chunk counter and privacy switch are read."""

    def __init__(self) -> None:
        self.chunks = 0
        self.listening = True


def test_heartbeat_tracks_progress(tmp_path):
    path = tmp_path / "health.json"
    listener = Counting()
    beat = addon.Heartbeat(listener, path, threading.Event())  # type: ignore[arg-type]
    beat.beat()
    first = json.loads(path.read_text())
    assert (first["chunks"], first["listening"]) == (0, True)
    assert addon.check_health(path) is None
    time.sleep(0.05)
    beat.beat()  # no new chunk: progress stays where it was
    assert json.loads(path.read_text())["progress"] == first["progress"]
    listener.chunks = 3
    beat.beat()
    assert json.loads(path.read_text())["progress"] > first["progress"]
    time.sleep(0.05)
    listener.listening = False  # paused on purpose: counts as progress
    beat.beat()
    paused = json.loads(path.read_text())
    assert paused["progress"] == paused["time"] and paused["listening"] is False


def write_beat(path: Path, age: float, stalled: float, chunks: int = 7) -> None:
    now = time.time()
    beat = {"v": 1, "time": now - age, "progress": now - stalled, "chunks": chunks}
    path.write_text(json.dumps({**beat, "listening": True}))


def _seconds(said: str | None, template: str) -> int:
    """The whole seconds in a health message of the template's shape (they grow as time passes)."""
    pattern = re.escape(template).replace(r"\{\}", r"(\d+)")
    found = re.fullmatch(pattern, said or "")
    assert found, said
    return int(found[1])


def test_check_health(tmp_path):
    path = tmp_path / "health.json"
    assert addon.check_health(path) == (
        f"no heartbeat at {path}: the listener is not running (or still starting)"
    )
    path.write_text("{")
    assert addon.check_health(path).startswith(f"heartbeat {path} is unreadable (")
    write_beat(path, age=95, stalled=95)
    old = "the last heartbeat is {} s old: the listener is not running"
    assert _seconds(addon.check_health(path), old) >= 95
    write_beat(path, age=2, stalled=75)
    assert _seconds(addon.check_health(path), "no audio analysed for {} s (7 chunks in all)") >= 75
    assert addon.check_health(path, stall_s=100) is None
    write_beat(path, age=2, stalled=10)
    assert addon.check_health(path) is None


def test_cli_health_exit_codes(tmp_path):
    path = tmp_path / "health.json"
    write_beat(path, age=1, stalled=1)
    done = run_cli("health", "--file", str(path))
    assert (done.returncode, done.stdout) == (0, "healthy\n")
    write_beat(path, age=1, stalled=120)
    done = run_cli("health", "--file", str(path))
    stalled = re.fullmatch(r"no audio analysed for (\d+) s \(7 chunks in all\)\n", done.stderr)
    # the seconds are counted when the command runs, however long it took to start
    assert done.returncode == 1 and stalled and int(stalled[1]) >= 120, done.stderr
    done = run_cli("health", "--file", str(tmp_path / "none.json"))
    assert done.returncode == 1  # never 2: Docker reserves it


def test_errors_are_sat_audio_errors():
    assert issubclass(addon.BrokerError, SatAudioError)
