"""The one schema every front door goes through: validators, sections, cross-field rules and
the protocol's limits. `validate` turns a mapping into a `Config` or one `ConfigError` line.

Each validator raises vol.Invalid("expected ..."); `errors.explain` adds the path and the value.
"""

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import voluptuous as vol

from sat_audio import BACKENDS, PRECISIONS
from sat_audio.config.env import FromEnv, read_secret
from sat_audio.config.errors import ConfigError, Said, explain, show
from sat_audio.config.model import Config, build
from sat_audio.errors import SatAudioError
from sat_audio.labels import canonical
from sat_audio.model.onnx_int8 import int8_plan
from sat_audio.model.registry import registry
from sat_audio.publish import protocol as wire

SOURCE_KINDS = ("mic", "file", "ffmpeg", "stdin")
PCM_FORMATS = ("s16le", "s32le", "f32le")
LOG_LEVELS = ("debug", "info", "warning", "error")
COMBINE = ("max", "sum", "mean")
POST_FROM = ("end", "start")
MAX_PRE_POST_S = 60.0
"""A clip's pre- and post-roll at most: the pre-roll is held in memory for every source."""
SMOOTHING = ("ema", "median")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# The checks whose bounds, choices and patterns are data (Number, Choice, Match, Maybe), so that
# another front door (the add-on's option schema) can state the same ones: see `field`.


@dataclass(frozen=True)
class Number:
    """A number from lo to hi (above lo when lo_open), or an integer."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    integer: bool = False

    @property
    def expected(self) -> str:
        kind = "an integer" if self.integer else "a number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None and not self.lo_open:
            return f"{kind} from {_fmt(lo)} to {_fmt(hi)}"
        parts = []
        if lo is not None:
            parts.append(f"above {_fmt(lo)}" if self.lo_open else f"at least {_fmt(lo)}")
        if hi is not None:
            parts.append(f"at most {_fmt(hi)}")
        return f"{kind} {' and '.join(parts)}".strip()

    def __call__(self, value: Any) -> Any:
        lo, hi, integer = self.lo, self.hi, self.integer
        if isinstance(value, FromEnv):
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                raise vol.Invalid(f"expected {self.expected}") from None
        ok = isinstance(value, int) and not isinstance(value, bool) if integer else False
        ok = ok or (not integer and _is_number(value))
        if not ok:
            raise vol.Invalid(f"expected {self.expected}")
        if lo is not None and (value <= lo if self.lo_open else value < lo):
            raise vol.Invalid(f"expected {self.expected}")
        if hi is not None and value > hi:
            raise vol.Invalid(f"expected {self.expected}")
        return int(value) if integer else float(value)


def _number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    integer: bool = False,
) -> Number:
    return Number(lo, hi, lo_open, integer)


def _off_or(check: Number) -> Callable[[Any], float]:
    """0 (off), or a number `check` takes."""
    expected = f"expected 0 (off) or {check.expected}"

    def off_or(value: Any) -> float:
        try:
            number = float(Number(0.0, check.hi)(value))
        except vol.Invalid:
            raise vol.Invalid(expected) from None
        if number == 0:
            return 0.0
        try:
            return float(check(number))
        except vol.Invalid:
            raise vol.Invalid(expected) from None

    return off_or


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _boolean(value: Any) -> bool:
    if isinstance(value, FromEnv) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise vol.Invalid("expected true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise vol.Invalid("expected a non-empty string")
    return value


@dataclass(frozen=True)
class Match:
    """Text that the pattern matches whole."""

    pattern: re.Pattern[str]
    expected: str

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise vol.Invalid(self.expected)
        return value


_slug = Match(
    re.compile(r"[a-z0-9_]+"),
    "expected a slug of lowercase letters, digits and _ (like kitchen_2)",
)


@dataclass(frozen=True)
class Choice:
    """One of the options (in any case when fold)."""

    options: tuple[str, ...]
    fold: bool = False

    def __call__(self, value: Any) -> str:
        key = value.lower() if self.fold and isinstance(value, str) else value
        if key not in self.options:
            raise vol.Invalid(f"expected one of {', '.join(self.options)}")
        return key


def _choice(*options: str, fold: bool = False) -> Choice:
    return Choice(options, fold)


@dataclass(frozen=True)
class Maybe:
    """None passes (YAML `key: null` or `key:`); anything else goes to `check`."""

    check: Callable[[Any], Any]

    def __call__(self, value: Any) -> Any:
        return None if value is None else self.check(value)


def _optional(check: Callable[[Any], Any]) -> Maybe:
    return Maybe(check)


def _secret(value: Any) -> str:
    """A password: text, or a number YAML read as one (password: 1234)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value):
        return str(value)
    raise vol.Invalid("expected a non-empty string")


def _device(value: Any) -> str | int:
    if isinstance(value, FromEnv) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise vol.Invalid("expected a device index (0, 1, ...) or a device name")


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise vol.Invalid("expected a list of strings")
    return tuple(value)


_topic_part = Match(
    re.compile(r"[^#+/\x00]([^#+\x00]*[^#+/\x00])?"),
    "expected an MQTT topic prefix without +, # or a leading/trailing /",
)


def key_name(key: Any) -> str:
    return key.schema if isinstance(key, vol.Marker) else key


def _keys(allowed: Mapping[str, Any], what: str) -> Callable[[Any], Any]:
    """Checks the value is a mapping with known keys; an unknown key gets a close-match hint."""
    names = [key_name(k) for k in allowed]

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise vol.Invalid(f"expected a mapping with {what}")
        for key in value:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise Said(f"unknown key {key!r}; {hint}expected one of {', '.join(names)}", [key])
        return value

    return check


class Section(vol.All):
    """A mapping: its keys known (`what` names them), then each key's check, then `post`'s rules
    across keys. `keys` is the section's schema, for `field`."""

    def __init__(self, keys: dict, what: str, post: Callable[[dict], dict] | None = None) -> None:
        super().__init__(_keys(keys, what), vol.Schema(keys), *([post] if post else []))
        self.keys = keys


def _section(schema: dict, what: str, post: Callable[[dict], dict] | None = None) -> Section:
    return Section(schema, what, post)


def _required(key: str, expected: str) -> vol.Required:
    return vol.Required(key, msg=f"missing; expected {expected}")


# ---------------------------------------------------------------------------------------------
# The schema, section by section


_LISTENER = _section(
    {
        vol.Optional("id", default="home"): _slug,
        vol.Optional("name", default="SAT Audio"): _text,
    },
    "id, name",
)


def _model_name(value: Any) -> str:
    """A registry name, or anything that looks like a checkpoint path or URL (checked on load).

    A bare word that is no registry name is a typo, caught here rather than at start-up.
    """
    name = _text(value)
    looks_like_file = "/" in name or "\\" in name or Path(name).suffix in (".pt", ".pth", ".ckpt")
    if name in registry() or looks_like_file or Path(name).expanduser().is_file():
        return name
    close = difflib.get_close_matches(name, list(registry()), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise Said(
        f"unknown model {name!r}; {hint}expected one of {', '.join(registry())}, "
        "a checkpoint file (.pt) or an http(s) URL"
    )


def _model_rules(model: dict) -> dict:
    if model["precision"] == "int8" and model["backend"] != "onnx":
        raise Said("int8 needs backend: onnx (torch runs float32 only)", ["precision"])
    if model["variant"] not in (None, model["name"]) and model["name"] in registry():
        raise Said(
            f"{model['variant']} contradicts model.name {model['name']}; model.variant names "
            "the architecture of a checkpoint file",
            ["variant"],
        )
    if model["precision"] == "int8":
        # the variant given, or known by name (or its checkpoint's file name), is checked here;
        # any other checkpoint's when its export is made
        name = Path(model["name"]).name
        variant = model["variant"] or next(
            (s.name for s in registry().values() if name in (s.name, s.file)), None
        )
        if variant is not None:
            try:
                int8_plan(variant)
            except SatAudioError as err:
                raise Said(str(err), ["precision"]) from None
    return model


_MODEL = _section(
    {
        vol.Optional("name", default="SAT_T_2s"): _model_name,
        vol.Optional("dir", default=None): _optional(_text),
        vol.Optional("chunk_seconds", default=None): _optional(_number(0.16, 60.0)),
        vol.Optional("threads", default=1): _number(1, 64, integer=True),
        vol.Optional("backend", default="onnx"): _choice(*BACKENDS),
        vol.Optional("precision", default="float32"): _choice(*PRECISIONS),
        vol.Optional("variant", default=None): _optional(_choice(*registry())),
    },
    "name, chunk_seconds, threads, ...",
    _model_rules,
)

SOURCE_COMMON = {
    vol.Optional("name"): _slug,
    _required("kind", f"one of {', '.join(SOURCE_KINDS)}"): _choice(*SOURCE_KINDS),
    vol.Optional("block_seconds", default=0.1): _number(0.01, 2.0),
    vol.Optional("queue_seconds", default=30.0): _number(1.0, 3600.0),
}
SOURCE_KIND: dict[str, dict[Any, Any]] = {
    "mic": {
        vol.Optional("device", default=None): _optional(_device),
        vol.Optional("channel", default=None): _optional(_number(0, 63, integer=True)),
        vol.Optional("samplerate", default=None): _optional(_number(8000, 384000, integer=True)),
    },
    "file": {
        _required("path", "the audio file to read"): _text,
        vol.Optional("channel", default=None): _optional(_number(0, 63, integer=True)),
        vol.Optional("realtime", default=True): _boolean,
        vol.Optional("loop", default=False): _boolean,
    },
    "ffmpeg": {
        _required("url", "a URL or path ffmpeg can read (like rtsp://camera/stream)"): _text,
        vol.Optional("input_args", default=()): _string_list,
    },
    "stdin": {
        vol.Optional("format", default="s16le"): _choice(*PCM_FORMATS),
        vol.Optional("rate", default=16000): _number(8000, 384000, integer=True),
        vol.Optional("channels", default=1): _number(1, 64, integer=True),
    },
}


def _source(value: Any) -> dict:
    """A source's keys depend on its kind: check the kind first, then that kind's keys."""
    if not isinstance(value, dict):
        raise vol.Invalid("expected a mapping with kind and that kind's keys")
    kind = value.get("kind")
    if "kind" not in value:
        raise Said(f"missing; expected one of {', '.join(SOURCE_KINDS)}", ["kind"])
    if kind not in SOURCE_KINDS:
        raise vol.Invalid(f"expected one of {', '.join(SOURCE_KINDS)}", ["kind"])
    schema = {**SOURCE_COMMON, **SOURCE_KIND[kind]}
    checked = _section(schema, f"the keys of a {kind} source")(value)
    checked.setdefault("name", kind)
    return checked


def _sources(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise vol.Invalid("expected a list of one or more sources")
    out = vol.Schema([_source])(value)
    seen: dict[str, int] = {}
    for i, src in enumerate(out):
        if src["name"] in seen:
            raise Said(
                f"name {src['name']!r} is already used by sources[{seen[src['name']]}]; "
                "expected unique source names",
                [i, "name"],
            )
        seen[src["name"]] = i
    return out


def _labels(value: Any) -> tuple[str, ...]:
    """AudioSet display names or mids, any case, canonicalised to display names; or custom
    sounds' labels, custom:NAME (their files are checked when the model loads)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise vol.Invalid("expected a list of one or more AudioSet labels")
    names: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise vol.Invalid("expected an AudioSet label name or mid", [i])
        try:
            name = canonical(item)  # custom:NAME too
        except SatAudioError as err:
            raise Said(str(err), [i]) from None
        if name in names:
            raise Said(f"{item!r} is {name!r}, already listed; expected each label once", [i])
        names.append(name)
    return tuple(names)


def _event_thresholds(event: dict) -> dict:
    on = event["on_threshold"]
    off = event.setdefault("off_threshold", round(on * 0.75, 6))
    if off >= on:
        raise Said(
            f"expected less than on_threshold ({_fmt(on)}) for hysteresis, got {_fmt(off)}",
            ["off_threshold"],
        )
    return event


def _loud_thresholds(event: dict) -> dict:
    on = event["on_dbfs"]
    off = event.setdefault("off_dbfs", on - 6.0)
    if off >= on:
        raise Said(
            f"expected less than on_dbfs ({_fmt(on)}) for hysteresis, got {_fmt(off)}",
            ["off_dbfs"],
        )
    return event | {"labels": (), "on_threshold": 0.0, "off_threshold": 0.0}


_CLIP = _section(
    {
        vol.Optional("pre_s", default=5.0): _number(0, MAX_PRE_POST_S),
        vol.Optional("post_s", default=5.0): _number(0, MAX_PRE_POST_S),
        vol.Optional("post_from", default="end"): _choice(*POST_FROM),
    },
    "pre_s, post_s, post_from",
)

_KIND: dict[Any, Any] = {vol.Optional("kind", default="sound"): _choice(*wire.KINDS)}
_TIMING: dict[Any, Any] = {
    vol.Optional("min_duration_s", default=0.0): _number(0, 3600),
    vol.Optional("hold_s", default=2.0): _number(0, 3600),
    vol.Optional("cooldown_s", default=0.0): _number(0, 86400),
}
_SWITCH_AND_CLIP: dict[Any, Any] = {
    vol.Optional("enabled", default=True): _boolean,
    vol.Optional("clip", default=None): _optional(_CLIP),
}

LOUD_EVENT = _section(
    {
        vol.Optional("name"): _text,
        **_KIND,
        _required("on_dbfs", "a level in dBFS from -120 to 0"): _number(-120, 0),
        vol.Optional("off_dbfs"): _number(-120, 0),
        **_TIMING,
        **_SWITCH_AND_CLIP,
    },
    "kind: loud, on_dbfs, off_dbfs, ...",
    _loud_thresholds,
)
"""A loud event's keys (`field("detection.events.*")` is a sound event's)."""

_EVENT = _section(
    {
        vol.Optional("name"): _text,
        _required("labels", "a list of AudioSet labels"): _labels,
        vol.Optional("combine", default="max"): _choice(*COMBINE),
        _required("on_threshold", "a number above 0 and at most 1"): _number(0, 1, lo_open=True),
        vol.Optional("off_threshold"): _number(0, 1, lo_open=True),
        **_TIMING,
        vol.Optional("min_level_dbfs", default=None): _optional(_number(-120, 0)),
        vol.Optional("smoothing", default=None): _optional(_choice("none", *SMOOTHING)),
        vol.Optional("smoothing_chunks", default=3): _number(1, 100, integer=True),
        **_KIND,
        **_SWITCH_AND_CLIP,
    },
    "labels, on_threshold, off_threshold, ...",
    _event_thresholds,
)


def _event(event: Any) -> dict:
    """A sound event (labels and scores) or a loud one (level alone), by its kind."""
    if not isinstance(event, dict) or event.get("kind") != "loud":
        return _EVENT(event)
    if "labels" in event:
        raise Said(
            "a loud event (kind: loud) is defined by its level alone; expected no labels",
            ["labels"],
        )
    return LOUD_EVENT(event)


def _events(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise vol.Invalid("expected a mapping of event keys (like glass_breaking) to events")
    out = {}
    for key, event in value.items():
        try:
            _slug(key)
        except vol.Invalid:
            raise Said(
                "expected an event key that is a slug of lowercase letters, digits and _ "
                f"(like glass_breaking), got {show(key)}",
                [key],
            ) from None
        if event is None:
            raise vol.Invalid("expected a mapping with labels and on_threshold", [key])
        try:
            out[key] = _event(event)
        except vol.Invalid as err:
            err.prepend([key])
            raise
    return out


_DETECTION = _section(
    {
        vol.Optional("min_level_dbfs", default=None): _optional(_number(-120, 0)),
        vol.Optional("events", default=dict): _events,
    },
    "min_level_dbfs, events",
)

_TLS_KEYS = {
    vol.Optional("ca", default=None): _optional(_text),
    vol.Optional("cert", default=None): _optional(_text),
    vol.Optional("key", default=None): _optional(_text),
    vol.Optional("insecure", default=False): _boolean,
}


def _tls(value: Any) -> dict | None:
    """`tls: true` = TLS with the system's CAs; false or null = no TLS; else a mapping."""
    if value is None or value is False:
        return None
    if value is True:
        return {"ca": None, "cert": None, "key": None, "insecure": False}
    tls = _section(_TLS_KEYS, "ca, cert, key, insecure, or true/false")(value)
    if (tls["cert"] is None) != (tls["key"] is None):
        missing = "key" if tls["key"] is None else "cert"
        raise Said("missing; a client certificate needs both cert and key", [missing])
    return tls


def _mqtt_rules(mqtt: dict) -> dict:
    if mqtt.get("password") is not None and mqtt.get("password_file") is not None:
        raise Said("give password or password_file, not both", ["password_file"])
    if mqtt.get("password_file") is not None:
        mqtt["password"] = read_secret(mqtt["password_file"], ("mqtt", "password_file"))
    mqtt.pop("password_file", None)
    if mqtt.get("password") is not None and mqtt.get("username") is None:
        raise Said("missing; a password needs a username", ["username"])
    if mqtt.get("port") is None:
        mqtt["port"] = 8883 if mqtt.get("tls") is not None else 1883
    return mqtt


_MQTT = _section(
    {
        vol.Optional("host", default=None): _optional(_text),
        vol.Optional("port", default=None): _optional(_number(1, 65535, integer=True)),
        vol.Optional("username", default=None): _optional(_text),
        vol.Optional("password", default=None): _optional(_secret),
        vol.Optional("password_file", default=None): _optional(_text),
        vol.Optional("tls", default=None): _tls,
        vol.Optional("topic_prefix", default="sat_audio"): _topic_part,
        vol.Optional("client_id", default=None): _optional(_text),
        vol.Optional("keepalive", default=60): _number(5, 3600, integer=True),
        vol.Optional("queue_size", default=1000): _number(1, 1_000_000, integer=True),
        vol.Optional("discovery", default=False): _boolean,
        vol.Optional("discovery_prefix", default="homeassistant"): _topic_part,
    },
    "host, port, username, password, tls, ...",
    _mqtt_rules,
)

_PUBLISHING = _section(
    {
        vol.Optional("scores", default=False): _boolean,
        vol.Optional("top_k", default=5): _number(1, 527, integer=True),
        vol.Optional("rate_hz", default=1.0): _number(0, 50, lo_open=True),
    },
    "scores, top_k, rate_hz",
)


def _address(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(value if isinstance(value, str) else ""))
    except ValueError:
        raise vol.Invalid("expected an IP address") from None


_WEB = _section(
    {
        vol.Optional("enabled", default=False): _boolean,
        vol.Optional("host", default="127.0.0.1"): _text,
        vol.Optional("port", default=8760): _number(0, 65535, integer=True),
        vol.Optional("history_minutes", default=10.0): _number(1, 24 * 60),
        vol.Optional("teach_seconds", default=30.0): _off_or(_number(5, 120)),
        vol.Optional("allow", default=list): [_address],
    },
    "enabled, host, port, history_minutes, teach_seconds, allow",
)

_LOGGING = _section(
    {vol.Optional("level", default="info"): _choice(*LOG_LEVELS, fold=True)},
    "level",
)


@dataclass(frozen=True)
class _OrEmpty:
    """`section:` with nothing under it means all defaults."""

    check: Section

    def __call__(self, value: Any) -> Any:
        return self.check({} if value is None else value)


_CLIPS = _section(
    {
        vol.Optional("dir", default=None): _optional(_text),
        vol.Optional("format", default="flac"): _choice(*wire.CLIP_FORMATS),
        vol.Optional("publish", default=True): _boolean,
        vol.Optional("max_count", default=100): _number(1, 100_000, integer=True),
        vol.Optional("max_age_days", default=30.0): _number(0, 36_500, lo_open=True),
        vol.Optional("max_total_mb", default=200.0): _number(0, lo_open=True),
    },
    "dir, format, publish, max_count, max_age_days, max_total_mb",
)


def _or_empty(section: Section) -> _OrEmpty:
    return _OrEmpty(section)


_TOP = {
    vol.Optional("listener", default=dict): _or_empty(_LISTENER),
    vol.Optional("model", default=dict): _or_empty(_MODEL),
    vol.Optional("sources", default=lambda: [{"kind": "mic"}]): _sources,
    vol.Optional("detection", default=dict): _or_empty(_DETECTION),
    vol.Optional("mqtt", default=None): _optional(_MQTT),
    vol.Optional("publishing", default=dict): _or_empty(_PUBLISHING),
    vol.Optional("logging", default=dict): _or_empty(_LOGGING),
    vol.Optional("web", default=dict): _or_empty(_WEB),
    vol.Optional("clips", default=dict): _or_empty(_CLIPS),
}
SCHEMA = _section(
    _TOP, "listener, model, sources, detection, mqtt, publishing, logging, web, clips"
)


_ITEMS: dict[str, Any] = {
    "sources": {k: v for keys in (SOURCE_COMMON, *SOURCE_KIND.values()) for k, v in keys.items()},
    "detection.events": _EVENT,
}
"""What each item of a list or mapping of sections is checked with, for `field`."""


def field(path: str) -> Any:
    """The check of one key by its path, like "model.threads" or "detection.events.*.hold_s"
    (* is any item). A `Number`, `Choice`, `Match` or `Maybe` says its bounds, choices or pattern;
    `detection.events.*` itself is an event, `EVENT_KEY` the check of its key."""
    check: Any = SCHEMA
    walked: list[str] = []
    for part in path.split("."):
        while isinstance(check, Maybe | _OrEmpty):
            check = check.check
        if part == "*":
            check = _ITEMS[".".join(walked)]
        else:
            keys = check.keys if isinstance(check, Section) else check
            check = next(v for k, v in keys.items() if key_name(k) == part)
        walked.append(part)
    return check


EVENT_KEY = _slug
"""The check of an event's key (detection.events.<key>)."""
BOOLEAN = _boolean
"""The check of a true/false key."""


def validate(data: Mapping[str, Any]) -> Config:
    """The one way to a `Config`: a configuration mapping (config.yaml's layout, ${VAR} already
    expanded or not used) checked against the schema and the limits. Any front door (a file,
    the add-on's options, the live view) calls this; a problem raises one `ConfigError` whose
    `path` names the key."""
    try:
        clean = SCHEMA(data)
    except vol.MultipleInvalid as err:
        raise explain(err.errors[0], data) from None
    except vol.Invalid as err:
        raise explain(err, data) from None
    config = build(clean)
    if problem := over_limits(config):
        raise problem
    return config


_EVENTS = ("detection", "events")


def over_limits(config: Config) -> ConfigError | None:
    """What of the config goes past the protocol's limits (docs/protocol.md, Limits), which
    Home Assistant's integration enforces by dropping the whole info: one error, or None."""
    n = len(config.sources)
    if n > wire.MAX_SOURCES:
        return ConfigError(f"expected at most {wire.MAX_SOURCES} sources, got {n}", ["sources"])
    for i, source in enumerate(config.sources):
        if len(source.name) > wire.MAX_TEXT:
            return ConfigError(
                f"expected at most {wire.MAX_TEXT} characters", ["sources", i, "name"]
            )
    lid, name = config.listener.id, config.listener.name
    if len(lid) > wire.MAX_SLUG:
        problem = f"expected at most {wire.MAX_SLUG} characters, got {len(lid)}"
        return ConfigError(problem, ["listener", "id"])
    if len(name) > wire.MAX_TEXT:
        problem = f"expected at most {wire.MAX_TEXT} characters, got {len(name)}"
        return ConfigError(problem, ["listener", "name"])
    for event in config.detection.events:
        if len(event.labels) > wire.MAX_LABELS:
            return ConfigError(
                f"expected at most {wire.MAX_LABELS} labels, got {len(event.labels)}",
                ["detection", "events", event.key, "labels"],
            )
    events = wire.published_events([s.name for s in config.sources], config.detection.events)
    if len(events) > wire.MAX_EVENTS:
        return ConfigError(
            f"{len(config.detection.events)} events on {n} sources publish {len(events)}; "
            f"expected at most {wire.MAX_EVENTS} in all",
            _EVENTS,
        )
    for published in events:
        if len(published.key) > wire.MAX_SLUG:
            return ConfigError(
                f"the published event key {published.key!r} (source name and event key) is "
                f"over {wire.MAX_SLUG} characters",
                _EVENTS,
            )
        if len(published.name) > wire.MAX_TEXT:
            return ConfigError(
                f"event name {show(published.name)} is published with "
                f"{len(published.name)} characters; expected at most {wire.MAX_TEXT}",
                _EVENTS,
            )
    # The whole info, each source with the longest error it may report.
    size = len(
        wire.to_json(
            wire.info_payload(
                listener_id=lid,
                name=name,
                model="x" * wire.MAX_TEXT,
                chunk_s=config.model.chunk_seconds or 2.0,
                listening=True,
                started=0.0,
                sources=[
                    wire.source_entry(
                        s.name, s.kind, "reconnecting", 2**31, 1e6, 2**31, "x" * wire.MAX_TEXT
                    )
                    for s in config.sources
                ],
                events=events,
                counters=dict.fromkeys(
                    ("chunks", "transitions", "mqtt_dropped", "mqtt_queued"), 2**63
                ),
            )
        ).encode()
    )
    if size > wire.MAX_PAYLOAD_BYTES:
        return ConfigError(
            f"the listener's info would take up to {size} bytes; expected at most "
            f"{wire.MAX_PAYLOAD_BYTES} (fewer events, labels or sources)",
            _EVENTS,
        )
    return None
