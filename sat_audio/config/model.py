"""The listener's configuration as typed, frozen dataclasses, one per YAML section."""

from dataclasses import dataclass, field, fields
from typing import Any

from sat_audio.redact import MASK, mask_secrets


@dataclass(frozen=True)
class ListenerConfig:
    id: str = "home"
    name: str = "SAT Audio"


@dataclass(frozen=True)
class ModelConfig:
    name: str = "SAT_T_2s"
    dir: str | None = None
    chunk_seconds: float | None = None
    threads: int = 1
    backend: str = "onnx"
    precision: str = "float32"
    variant: str | None = None
    """The architecture of a checkpoint not under its upstream file name."""

    @property
    def runtime(self) -> str:
        """What runs the model, for logs: torch, onnx, or onnx int8."""
        return self.backend if self.precision == "float32" else f"{self.backend} {self.precision}"


@dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str
    device: str | int | None = None
    channel: int | None = None
    samplerate: int | None = None
    path: str | None = None
    realtime: bool = True
    loop: bool = False
    url: str | None = None
    input_args: tuple[str, ...] = ()
    format: str = "s16le"
    rate: int = 16000
    channels: int = 1
    block_seconds: float = 0.1
    queue_seconds: float = 30.0


@dataclass(frozen=True)
class ClipConfig:
    """An event's clip: pre_s before the start to post_s after the end (or the start)."""

    pre_s: float = 5.0
    post_s: float = 5.0
    post_from: str = "end"


@dataclass(frozen=True)
class EventConfig:
    key: str
    name: str
    labels: tuple[str, ...]
    on_threshold: float
    off_threshold: float
    combine: str = "max"
    min_duration_s: float = 0.0
    hold_s: float = 2.0
    cooldown_s: float = 0.0
    min_level_dbfs: float | None = None
    smoothing: str | None = None
    smoothing_chunks: int = 3
    kind: str = "sound"
    """sound: the model's labels; loud: the level alone (on_dbfs, off_dbfs), no labels."""
    on_dbfs: float | None = None
    off_dbfs: float | None = None
    enabled: bool = True
    clip: ClipConfig | None = None


@dataclass(frozen=True)
class DetectionConfig:
    events: tuple[EventConfig, ...] = ()
    min_level_dbfs: float | None = None


@dataclass(frozen=True)
class ClipsConfig:
    """Where clips go and how long they stay; used only when an event has clip:."""

    dir: str | None = None
    format: str = "flac"
    publish: bool = True
    max_count: int = 100
    max_age_days: float = 30.0
    max_total_mb: float = 200.0


@dataclass(frozen=True)
class TlsConfig:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    topic_prefix: str = "sat_audio"
    client_id: str | None = None
    keepalive: int = 60
    queue_size: int = 1000
    discovery: bool = False
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True)
class PublishingConfig:
    scores: bool = False
    top_k: int = 5
    rate_hz: float = 1.0


@dataclass(frozen=True)
class WebConfig:
    """The live view: off unless enabled; binds 127.0.0.1 unless told otherwise."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8760
    history_minutes: float = 10.0
    teach_seconds: float = 30.0
    """The last this many seconds of each source's audio, in memory for teaching from the page
    (0: none kept)."""
    allow: tuple[str, ...] = ()
    """Client addresses it answers (others get 403); empty: any that can connect."""


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    listener: ListenerConfig = field(default_factory=ListenerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sources: tuple[SourceConfig, ...] = (SourceConfig(name="mic", kind="mic"),)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    mqtt: MqttConfig | None = None
    publishing: PublishingConfig = field(default_factory=PublishingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    web: WebConfig = field(default_factory=WebConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)


def _plain(value: Any) -> Any:
    """Text from the environment back to plain str, so nothing downstream sees `FromEnv`."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return str(value) if isinstance(value, str) else value


def build(clean: dict) -> Config:
    """The dataclasses from a mapping the schema has checked and completed with defaults."""
    clean = _plain(clean)
    det = clean["detection"]
    events = tuple(
        EventConfig(
            key=key,
            name=ev.pop("name", None) or key.replace("_", " ").capitalize(),
            **{
                **ev,
                "smoothing": None if ev.get("smoothing") == "none" else ev.get("smoothing"),
                "clip": None if ev["clip"] is None else ClipConfig(**ev["clip"]),
            },
        )
        for key, ev in det["events"].items()
    )
    mqtt = clean["mqtt"]
    mqtt_cfg = None
    if mqtt is not None and mqtt["host"] is not None:
        tls = TlsConfig(**mqtt.pop("tls")) if mqtt["tls"] is not None else None
        mqtt_cfg = MqttConfig(**{**mqtt, "tls": tls})
    return Config(
        listener=ListenerConfig(**clean["listener"]),
        model=ModelConfig(**clean["model"]),
        sources=tuple(SourceConfig(**src) for src in clean["sources"]),
        detection=DetectionConfig(events=events, min_level_dbfs=det["min_level_dbfs"]),
        mqtt=mqtt_cfg,
        publishing=PublishingConfig(**clean["publishing"]),
        logging=LoggingConfig(**clean["logging"]),
        web=WebConfig(**{**clean["web"], "allow": tuple(clean["web"]["allow"])}),
        clips=ClipsConfig(**clean["clips"]),
    )


SOUND_ONLY = ("labels", "on_threshold", "off_threshold", "combine", "min_level_dbfs",
              "smoothing", "smoothing_chunks")  # fmt: skip
LOUD_ONLY = ("on_dbfs", "off_dbfs")


def _event_keys(event: dict) -> dict:
    """An event with only the keys its kind takes, as a file would have it."""
    drop = SOUND_ONLY if event["kind"] == "loud" else LOUD_ONLY
    return {k: v for k, v in event.items() if k not in drop}


def to_dict(config: Config, *, mask: bool = True) -> dict:
    """The configuration as YAML-ready data, events as a mapping; every source has every field."""

    def plain(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
        if isinstance(obj, tuple):
            return [plain(v) for v in obj]
        return obj

    out = plain(config)
    detection = out["detection"]
    out["detection"] = {
        "min_level_dbfs": detection["min_level_dbfs"],
        "events": {ev.pop("key"): _event_keys(ev) for ev in detection["events"]},
    }
    if mask:
        for src in out["sources"]:
            if src["url"]:
                src["url"] = mask_secrets(src["url"])
        if out["mqtt"] and out["mqtt"]["password"] is not None:
            out["mqtt"]["password"] = MASK
    return out
