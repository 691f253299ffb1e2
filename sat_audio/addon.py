"""Home Assistant add-on mode: the add-on's options and the Supervisor's broker, as a Config.

The Supervisor writes what the user set in the add-on's UI to /data/options.json and hands the
add-on a token (SUPERVISOR_TOKEN) for its services API, where `services: [mqtt:need]` lets it
read the broker's address and credentials. Everything here turns those two into the listener's
own configuration, checked by its one schema, with one-line errors that name the option (by
mapping the schema's key paths to options) or say what the broker lacks.
"""

import importlib.util
import json
import logging
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sat_audio import __version__
from sat_audio.config import Config, ConfigError, ModelConfig, to_dict, validate
from sat_audio.config.errors import path_text
from sat_audio.errors import SatAudioError
from sat_audio.labels import all_labels
from sat_audio.model.registry import registry
from sat_audio.redact import log_to_stderr

if TYPE_CHECKING:
    from sat_audio.listener import Listener

log = logging.getLogger(__name__)

DATA_DIR = Path("/data")
"""The add-on's persistent folder: options.json and the downloaded checkpoints live here."""
SUPERVISOR_URL = "http://supervisor"
TOKEN_ENV = "SUPERVISOR_TOKEN"
HEALTH_FILE = Path("/tmp/sat_audio/health.json")
"""The heartbeat add-on mode writes and `sat-audio health` (Docker's HEALTHCHECK) reads."""
BEAT_S = 5.0
"""How often the heartbeat is written."""
STALE_S = 30.0
"""A heartbeat older than this means the listener process is gone or frozen."""
STALL_S = 60.0
"""Listening but no chunk analysed for this long means no audio is coming through."""
INGRESS_PORT = 8760
"""The live view's port in the container: addon/config.yaml's ingress_port."""
INGRESS_PROXY = "172.30.32.2"
"""The Supervisor's ingress proxy, the one address the add-on's live view answers (others get
403): Home Assistant signs its users in and forwards them through it."""


def streaming_models() -> tuple[str, ...]:
    """The models offered in the UI: the streaming variants (plain ViTs forget between chunks,
    so their scores flicker, which is what alerting cannot use)."""
    return tuple(name for name, spec in registry().items() if spec.streaming)


class BrokerError(SatAudioError):
    """The Supervisor gave no usable MQTT broker."""


def read_options(path: Path) -> dict[str, Any]:
    """The add-on options the Supervisor wrote, as a dict."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"add-on options {path} not found; add-on mode runs inside Home Assistant"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"add-on options {path} are not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"add-on options {path} hold {type(data).__name__}, not an object")
    return data


def fetch_mqtt_service(base_url: str, token: str | None, timeout: float = 10.0) -> dict[str, Any]:
    """The broker the Supervisor's services API names: host, port, ssl, username, password."""
    if not token:
        raise BrokerError(
            f"{TOKEN_ENV} is not set, so the Supervisor cannot be asked for the MQTT broker; "
            "add-on mode runs only inside Home Assistant"
        )
    url = base_url.rstrip("/") + "/services/mqtt"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        raise BrokerError(_refusal(err.code, err.read())) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise BrokerError(f"cannot reach the Supervisor at {base_url} ({reason})") from None
    try:
        answer = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BrokerError("the Supervisor's MQTT service answer is not JSON") from None
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or not data.get("host") or not data.get("port"):
        raise BrokerError("the Supervisor's MQTT service answer names no broker host and port")
    return data


def _refusal(status: int, body: bytes) -> str:
    """One line saying why the Supervisor refused, with its own message when it sent one."""
    try:
        message = json.loads(body).get("message") or ""
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        message = ""
    said = f" (Supervisor: {message})" if message else ""
    if status == 400:
        return (
            "no MQTT broker is available: install and start the Mosquitto broker add-on, "
            f"then restart this add-on{said}"
        )
    if status in (401, 403):
        return f"the Supervisor refused the MQTT service to this add-on (HTTP {status}){said}"
    if status == 404:
        return f"the Supervisor has no MQTT service (HTTP 404){said}"
    return f"the Supervisor answered HTTP {status} for the MQTT service{said}"


OPTIONS: dict[str, tuple[str | int, ...]] = {
    "model": ("model", "name"),
    "chunk_seconds": ("model", "chunk_seconds"),
    "threads": ("model", "threads"),
    "backend": ("model", "backend"),
    "precision": ("model", "precision"),
    "device": ("sources", 0, "device"),
    "stream_url": ("sources", 0, "url"),
    "events": ("detection", "events"),
    "min_level_dbfs": ("detection", "min_level_dbfs"),
    "topic_prefix": ("mqtt", "topic_prefix"),
    "listener_id": ("listener", "id"),
    "log_level": ("logging", "level"),
    "clips_format": ("clips", "format"),
    "clips_publish": ("clips", "publish"),
    "clips_max_count": ("clips", "max_count"),
    "clips_max_age_days": ("clips", "max_age_days"),
    "clips_max_total_mb": ("clips", "max_total_mb"),
}
"""Each option and the listener's key it sets, so that the schema's error on that key names the
option. An event's fields keep their names under detection.events.<id>; its id is that key, and
its clip_pre_s, clip_post_s and clip_post_from are its clip's pre_s, post_s and post_from."""
CLIP_FIELDS = ("pre_s", "post_s", "post_from")


def _fail(option: str, problem: str) -> ConfigError:
    return ConfigError(f"option '{option}': {problem}")


def _given(value: Any) -> Any:
    """An optional option as typed in the UI: text stripped, and empty text is not set."""
    if isinstance(value, str):
        return value.strip() or None
    return value


def torch_installed() -> bool:
    """Whether torch can be imported: the add-on's image leaves it out unless built with it."""
    return importlib.util.find_spec("torch") is not None


def _backend(value: Any) -> Any:
    """torch only where the image has it; any other value is the schema's to check."""
    if value == "torch" and not torch_installed():
        raise _fail(
            "backend",
            "torch is not in this add-on's image, which runs onnx (an image built with the "
            "TORCH_PACKAGE build argument has torch)",
        )
    return value


def split_labels(text: str) -> list[str]:
    """Label names from comma-separated text, keeping AudioSet names that hold commas whole.

    "Glass, Shatter" is two labels, "Water tap, faucet" one: from each piece on, the longest run
    of pieces that is an AudioSet name wins. No piece of a name with commas is itself a name, so
    a list reads only one way. Other pieces (a mid, custom:NAME, a misspelling) stay as written:
    the listener's schema checks every label.
    """
    names = {lab.name.casefold() for lab in all_labels()}
    pieces = [p.strip() for p in text.split(",")]
    found: list[str] = []
    i = 0
    while i < len(pieces):
        if not pieces[i]:
            raise SatAudioError(f"empty label name in {text!r}")
        j = next(
            (j for j in range(len(pieces), i, -1) if ", ".join(pieces[i:j]).casefold() in names),
            i + 1,
        )
        found.append(", ".join(pieces[i:j]))
        i = j
    return found


def event_id(name: str) -> str:
    """The id an event gets from its name when none is set: "Glass breaking" -> glass_breaking."""
    return re.sub(r"[^a-z0-9]+", "_", name.casefold()).strip("_")


def _event(event: Any, where: str) -> tuple[Any, dict[str, Any]]:
    """One entry of the events option: its id (set, or made from its name) and its fields, with
    the labels text split into names. Fields left empty are not set."""
    if not isinstance(event, dict):
        raise _fail(where, f"must be a mapping, got {event!r}")
    fields = {k: _given(v) for k, v in event.items() if k != "id"}
    fields = {k: v for k, v in fields.items() if v is not None}
    name = fields.get("name")
    if not isinstance(name, str):
        raise _fail(f"{where}.name", "is required")
    key = event_id(name) if event.get("id") is None else event["id"]
    if not key:
        raise _fail(f"{where}.id", f"name {name!r} gives no id; set one (like glass_breaking)")
    clip = {f: fields.pop(f"clip_{f}") for f in CLIP_FIELDS if f"clip_{f}" in fields}
    if clip:  # any clip field set keeps clips; the others take their defaults
        fields["clip"] = clip
    labels = fields.get("labels")
    if labels is None and fields.get("kind") != "loud":
        raise _fail(f"{where} ({key}).labels", "is required: AudioSet names, separated by commas")
    if isinstance(labels, str):
        try:
            fields["labels"] = split_labels(labels)
        except SatAudioError as err:
            raise _fail(f"{where} ({key}).labels", str(err)) from None
    return key, fields


def _events(value: Any) -> dict[Any, dict[str, Any]]:
    """The events option (a list in the UI) as the config's mapping of event id to fields."""
    if not isinstance(value, list) or not value:
        raise _fail("events", "set at least one event")
    table: dict[Any, dict[str, Any]] = {}
    for i, event in enumerate(value):
        key, fields = _event(event, f"events[{i}]")
        if key in table:
            raise _fail(f"events[{i}]", f"id {key!r} is used by an earlier event")
        table[key] = fields
    return table


def _source(options: Mapping[str, Any]) -> dict[str, Any]:
    """A camera stream through ffmpeg when stream_url is set, else the add-on's audio input."""
    device, url = _given(options.get("device")), _given(options.get("stream_url"))
    if url is not None and device is not None:
        raise _fail("stream_url", "set either device or stream_url, not both")
    if url is not None:
        return {"name": "stream", "kind": "ffmpeg", "url": url}
    mic: dict[str, Any] = {"name": "mic", "kind": "mic"}
    if device is not None:
        mic["device"] = int(device) if isinstance(device, str) and device.isdigit() else device
    return mic


def options_dict(options: Mapping[str, Any], data_dir: Path = DATA_DIR) -> dict[str, Any]:
    """The listener configuration (config.yaml's layout) these options set, broker aside.

    Values pass as they are, for the listener's schema to check (`to_config`). An optional option
    left empty means what it says (no volume gate, the model's own chunk length), not the
    listener's config.yaml default: the add-on's defaults are its options.
    """
    return {
        "listener": {"id": options.get("listener_id")},
        "model": {
            "name": options.get("model"),
            "dir": str(data_dir / "models"),
            "chunk_seconds": options.get("chunk_seconds"),
            "threads": options.get("threads"),
            "backend": _backend(options.get("backend")),
            "precision": options.get("precision"),
        },
        "sources": [_source(options)],
        "detection": {
            "min_level_dbfs": options.get("min_level_dbfs"),
            "events": _events(options.get("events")),
        },
        "mqtt": {"topic_prefix": options.get("topic_prefix")},
        "logging": {"level": options.get("log_level")},
        # the live view, as the sidebar panel: on every address of the container, answering
        # only the ingress proxy
        "web": {"enabled": True, "host": "0.0.0.0", "port": INGRESS_PORT, "allow": [INGRESS_PROXY]},
        "clips": {
            "dir": str(data_dir / "clips"),
            **{
                key[1]: options[option]
                for option, key in OPTIONS.items()
                if key[0] == "clips" and options.get(option) is not None
            },
        },
    }


def with_broker(config: dict[str, Any], broker: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration with the Supervisor's broker filled in (TLS when it says ssl)."""
    mqtt = {**config["mqtt"], "host": str(broker["host"]), "port": int(broker["port"])}
    for key in ("username", "password"):
        if broker.get(key):
            mqtt[key] = str(broker[key])
    if broker.get("ssl"):
        mqtt["tls"] = True
    return {**config, "mqtt": mqtt}


def option_error(err: ConfigError, events: list[Any]) -> ConfigError:
    """The schema's error on a key, said of the option the user set it with (`OPTIONS`); events
    are the event ids in the order of the events option."""
    path = err.path or ()
    if path[:2] == ("detection", "events") and len(path) > 2 and path[2] in events:
        where = f"events[{events.index(path[2])}]"
        if len(path) == 3:  # the event's key: its id
            return _fail(f"{where}.id", err.problem)
        rest = path[3:4] if path[3] == "labels" else path[3:]  # labels is one text option
        if path[3] == "clip" and len(path) > 4:
            rest = (f"clip_{path[4]}",)
        return _fail(f"{where} ({path[2]}).{path_text(rest)}", err.problem)
    for option, key in OPTIONS.items():
        if path[: len(key)] == key:
            return _fail(option, err.problem)
    return ConfigError(f"add-on options: {err}")


def to_config(config: dict[str, Any]) -> Config:
    """The listener's Config from its one schema (`validate`); an error names the option.

    Nothing is ${VAR}-expanded: the options and the broker's password are taken as they are.
    """
    try:
        return validate(config)
    except ConfigError as err:
        raise option_error(err, list(config["detection"]["events"])) from None


def describe(config: Config) -> str:
    """One start-up line: what listens to what and where it publishes (never a password)."""
    source = to_dict(config)["sources"][0]  # a stream URL's password masked
    device = "default" if source["device"] is None else source["device"]
    heard = source["url"] or f"audio input {device}"
    mqtt = config.mqtt
    broker = "no broker" if mqtt is None else f"{mqtt.host}:{mqtt.port}"
    user = f" as {mqtt.username}" if mqtt is not None and mqtt.username else ""
    events = ", ".join(e.key for e in config.detection.events)
    return (
        f"listener {config.listener.id}: model {config.model.name} on {config.model.runtime} "
        f"from {config.model.dir}, "
        f"{heard}, events {events}; MQTT {broker}{user}"
    )


def load(
    options_path: Path | None = None,
    supervisor_url: str = SUPERVISOR_URL,
    data_dir: Path = DATA_DIR,
    token: str | None = None,
) -> Config:
    """Options first (a bad option is the user's to fix), then the broker from the Supervisor."""
    options = options_dict(read_options(options_path or data_dir / "options.json"), data_dir)
    to_config(options)  # checked before the broker is asked, which may be missing too
    broker = fetch_mqtt_service(supervisor_url, token or os.environ.get(TOKEN_ENV))
    return to_config(with_broker(options, broker))


class Heartbeat(threading.Thread):
    """Writes, every few seconds, whether the listener is still analysing audio.

    Progress is the chunk counter moving; a paused listener (the privacy switch) counts as
    progressing, since it reads audio on purpose without analysing it.
    """

    def __init__(self, listener: "Listener", path: Path, stop: threading.Event) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.listener = listener
        self.path = path
        self.stop = stop
        self._chunks = -1
        self._progress = time.time()

    def run(self) -> None:
        while True:
            self.beat()
            if self.stop.wait(BEAT_S):
                return

    def beat(self) -> None:
        now = time.time()
        chunks, listening = self.listener.chunks, self.listener.listening
        if chunks != self._chunks or not listening:
            self._chunks, self._progress = chunks, now
        state = {"v": 1, "time": now, "progress": self._progress, "chunks": chunks}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".health.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({**state, "listening": listening}, out, allow_nan=False)
        os.replace(tmp, self.path)  # a reader never sees half a file


def check_health(path: Path = HEALTH_FILE, stall_s: float = STALL_S) -> str | None:
    """What is wrong with the listener according to its heartbeat, or None when it is healthy."""
    try:
        beat = json.loads(path.read_text(encoding="utf-8"))
        written, progress, chunks = float(beat["time"]), float(beat["progress"]), beat["chunks"]
    except FileNotFoundError:
        return f"no heartbeat at {path}: the listener is not running (or still starting)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"heartbeat {path} is unreadable ({err})"
    now = time.time()
    if now - written > STALE_S:
        return f"the last heartbeat is {now - written:.0f} s old: the listener is not running"
    if now - progress > stall_s:
        return f"no audio analysed for {now - progress:.0f} s ({chunks} chunks in all)"
    return None


def prepare_onnx(model: ModelConfig) -> Path:
    """The onnx backend's model file, exported once per add-on version, in a child process.

    An add-on's user runs no commands, so the add-on does what `sat-audio models export-onnx`
    does (downloading the checkpoint first if it must), in a child (engine.export_in_child) whose
    memory leaves with it; the listener then runs on onnxruntime alone. A new add-on version
    exports again, since the graph's format may have changed with it.
    """
    from sat_audio.engine import export_in_child
    from sat_audio.model.onnx_runtime import onnx_path

    path = onnx_path(model.name, model.dir, model.precision)
    stamp = path.with_name(f"{path.name}.version")
    if path.is_file() and stamp.is_file() and stamp.read_text().strip() == __version__:
        return path
    log.info("exporting %s for the %s backend (once per add-on version)", model.name, model.runtime)
    try:
        export_in_child(model.name, model.dir, path, model.precision)
    except SatAudioError as err:
        raise SatAudioError(
            f"exporting {model.name} for the {model.runtime} backend failed: {err}"
        ) from None
    stamp.write_text(f"{__version__}\n")
    return path


def _log_inputs() -> None:
    """At debug level, the input devices the device option can name."""
    from sat_audio.sources.mic import input_devices

    for device in input_devices():
        default = " (default)" if device.is_default else ""
        log.debug("input device %d: %s%s", device.index, device.name, default)


def run(
    options_path: Path | None = None,
    supervisor_url: str = SUPERVISOR_URL,
    data_dir: Path = DATA_DIR,
    health_file: Path = HEALTH_FILE,
) -> int:
    """Add-on mode: configure from the options and the Supervisor, then listen until stopped."""
    config = load(options_path, supervisor_url, data_dir)
    log_to_stderr(config.logging.level)
    log.info("SAT Audio %s add-on: %s", __version__, describe(config))
    if config.sources[0].kind == "mic" and log.isEnabledFor(logging.DEBUG):
        _log_inputs()
    if config.model.backend == "onnx":
        prepare_onnx(config.model)
    from sat_audio.listener import serve

    health_file.parent.mkdir(parents=True, exist_ok=True)
    return serve(config, lambda listener, stop: Heartbeat(listener, health_file, stop).start())
