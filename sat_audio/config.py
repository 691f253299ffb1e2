"""The listener's configuration: typed, frozen, one dataclass per YAML section.

`load_config` finds and reads the YAML, `parse_config` validates a mapping with voluptuous and
builds the dataclasses. Every problem becomes one `ConfigError` line naming the key path, the bad
value and what is expected; voluptuous' own wording is translated in one place (`_explain`).
"""

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import voluptuous as vol
import yaml

from sat_audio import BACKENDS, PRECISIONS
from sat_audio.errors import SatAudioError
from sat_audio.labels import find
from sat_audio.model.onnx_int8 import int8_plan
from sat_audio.model.registry import registry
from sat_audio.publish import protocol as wire
from sat_audio.redact import MASK, mask_secrets

CONFIG_ENV = "SAT_AUDIO_CONFIG"
"""Environment variable naming the configuration file when no path is given."""
SOURCE_KINDS = ("mic", "file", "ffmpeg", "stdin")
PCM_FORMATS = ("s16le", "s32le", "f32le")
LOG_LEVELS = ("debug", "info", "warning", "error")
COMBINE = ("max", "sum", "mean")
SMOOTHING = ("ema", "median")


class ConfigError(SatAudioError):
    """A configuration problem, reported as one line naming the key path."""


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


@dataclass(frozen=True)
class DetectionConfig:
    events: tuple[EventConfig, ...] = ()
    min_level_dbfs: float | None = None


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


# ---------------------------------------------------------------------------------------------
# Loading


def config_path(path: Path | None) -> Path | None:
    """The file `load_config(path)` reads: the path, $SAT_AUDIO_CONFIG, ./config.yaml, or None."""
    if path is not None:
        return path
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path("config.yaml")
    return local if local.is_file() else None


def default_config_text() -> str:
    """The embedded defaults: the repository's top-level config.yaml.

    A wheel ships it as sat_audio/defaults/config.yaml (pyproject.toml); an editable install or a
    source checkout reads it where it lies, next to the sat_audio folder.
    """
    packaged = resources.files("sat_audio") / "defaults" / "config.yaml"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / "config.yaml").read_text(encoding="utf-8")


def load_config(path: Path | None = None) -> Config:
    """Read and validate a configuration file (see `config_path` for which one)."""
    found = config_path(path)
    if found is None:
        return parse_config(_read_yaml(default_config_text(), "embedded defaults"))
    try:
        text = found.read_text(encoding="utf-8")
    except FileNotFoundError:
        via = f" (from ${CONFIG_ENV})" if path is None else ""
        raise ConfigError(f"{found}: no such configuration file{via}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{found}: cannot read the configuration ({_reason(err)})") from None
    return parse_config(_read_yaml(text, str(found)), origin=str(found))


def _reason(err: Exception) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


MAX_YAML_VALUES = 100_000
"""A configuration holds a few hundred values. Aliases can repeat a value exponentially often (a
"billion laughs" of 63 aliases is 9**9 strings), so a document that holds more is refused while
it is only a graph of the file's own nodes."""
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(yaml.composer.ComposerError):
    """Valid YAML that is not read: too large once its aliases are expanded, or recursive."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(None, None, problem, mark)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document that holds more than MAX_YAML_VALUES values once every alias stands
    for what it names, or an alias inside what it names. Each node is sized once."""
    sizes: dict[int, int] = {}
    inside: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in inside:
            raise _Refused("an alias inside the value it names", node.start_mark)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        inside.add(id(node))
        total = 1 + sum(size(child) for child in children)
        inside.discard(id(node))
        if total > MAX_YAML_VALUES:
            raise _Refused(
                f"its aliases expand to more than {MAX_YAML_VALUES} values", node.start_mark
            )
        sizes[id(node)] = total
        return total

    size(root)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)
    and a document whose aliases expand too far (see MAX_YAML_VALUES)."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue  # `<<: *defaults`: merged keys yield to the mapping's own
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} appears twice in one mapping",
                    problem_mark=key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "refused" if isinstance(err, _Refused) else "not valid YAML"
        raise ConfigError(f"{origin}: {where}{what}: {err.problem}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: refused: nested too deeply") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: expected a mapping of sections (listener, model, sources, ...) "
            f"at the top level, got {_show(data)}"
        )
    return data


# ---------------------------------------------------------------------------------------------
# Secrets

_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _FromEnv(str):
    """Text that came from an environment variable: number and boolean keys may parse it."""


def _expand(value: Any, path: tuple) -> Any:
    """Replace ${VAR} in every string with the environment variable; $${VAR} stays literal.

    Environment variables are text, so a key expecting a number or true/false reads "1883" or
    "true" from one (only from one: in YAML itself, quoted "1883" is still an error).
    """
    if isinstance(value, dict):
        return {k: _expand(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    used = False

    def sub(match: re.Match) -> str:
        nonlocal used
        escaped, name = match.groups()
        if escaped:
            return "${" + name + "}"
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(
                f"{_path(path)}: expected ${{NAME}} with a variable name of letters, digits "
                f"and _, got ${{{name}}}"
            )
        if name not in os.environ:
            raise ConfigError(f"{_path(path)}: environment variable {name} is not set")
        used = True
        return os.environ[name]

    text = _VAR.sub(sub, value)
    return _FromEnv(text) if used else text


def _read_secret(file: str, path: tuple) -> str:
    try:
        secret = Path(file).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{_path(path)}: cannot read {file!r} ({_reason(err)})") from None
    if not secret:
        raise ConfigError(f"{_path(path)}: {file!r} is empty; expected the password in it")
    return secret


# ---------------------------------------------------------------------------------------------
# Validators: each raises vol.Invalid("expected ..."); `_explain` adds the path and the value.


class _Said(vol.Invalid):
    """An error whose message already says everything; `_explain` adds only the path."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    integer: bool = False,
) -> Callable[[Any], Any]:
    kind = "an integer" if integer else "a number"
    if lo is not None and hi is not None and not lo_open:
        expected = f"{kind} from {_fmt(lo)} to {_fmt(hi)}"
    else:
        parts = []
        if lo is not None:
            parts.append(f"above {_fmt(lo)}" if lo_open else f"at least {_fmt(lo)}")
        if hi is not None:
            parts.append(f"at most {_fmt(hi)}")
        expected = f"{kind} {' and '.join(parts)}".strip()

    def check(value: Any) -> Any:
        if isinstance(value, _FromEnv):
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                raise vol.Invalid(f"expected {expected}") from None
        ok = isinstance(value, int) and not isinstance(value, bool) if integer else False
        ok = ok or (not integer and _is_number(value))
        if not ok:
            raise vol.Invalid(f"expected {expected}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise vol.Invalid(f"expected {expected}")
        if hi is not None and value > hi:
            raise vol.Invalid(f"expected {expected}")
        return int(value) if integer else float(value)

    return check


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _boolean(value: Any) -> bool:
    if isinstance(value, _FromEnv) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise vol.Invalid("expected true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise vol.Invalid("expected a non-empty string")
    return value


_SLUG = re.compile(r"[a-z0-9_]+")


def _slug(value: Any) -> str:
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise vol.Invalid("expected a slug of lowercase letters, digits and _ (like kitchen_2)")
    return value


def _choice(*options: str, fold: bool = False) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        key = value.lower() if fold and isinstance(value, str) else value
        if key not in options:
            raise vol.Invalid(f"expected one of {', '.join(options)}")
        return key

    return check


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """None passes; anything else goes to `check` (YAML `key: null` or `key:`)."""

    def inner(value: Any) -> Any:
        return None if value is None else check(value)

    return inner


def _secret(value: Any) -> str:
    """A password: text, or a number YAML read as one (password: 1234)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value):
        return str(value)
    raise vol.Invalid("expected a non-empty string")


def _device(value: Any) -> str | int:
    if isinstance(value, _FromEnv) and value.isdigit():
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


def _topic_part(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value
        or any(c in value for c in "+#\0")
        or value.startswith("/")
        or value.endswith("/")
    ):
        raise vol.Invalid("expected an MQTT topic prefix without +, # or a leading/trailing /")
    return value


def _key_name(key: Any) -> str:
    return key.schema if isinstance(key, vol.Marker) else key


def _keys(allowed: Mapping[str, Any], what: str) -> Callable[[Any], Any]:
    """Checks the value is a mapping with known keys; an unknown key gets a close-match hint."""
    names = [_key_name(k) for k in allowed]

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise vol.Invalid(f"expected a mapping with {what}")
        for key in value:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise _Said(f"unknown key {key!r}; {hint}expected one of {', '.join(names)}", [key])
        return value

    return check


def _section(
    schema: dict, what: str, post: Callable[[dict], dict] | None = None
) -> Callable[[Any], Any]:
    steps: list[Callable[[Any], Any]] = [_keys(schema, what), vol.Schema(schema)]
    return vol.All(*steps, *([post] if post else []))


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
    raise _Said(
        f"unknown model {name!r}; {hint}expected one of {', '.join(registry())}, "
        "a checkpoint file (.pt) or an http(s) URL"
    )


def _model_rules(model: dict) -> dict:
    if model["precision"] == "int8" and model["backend"] != "onnx":
        raise _Said("int8 needs backend: onnx (torch runs float32 only)", ["precision"])
    if model["variant"] not in (None, model["name"]) and model["name"] in registry():
        raise _Said(
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
                raise _Said(str(err), ["precision"]) from None
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

_SOURCE_COMMON = {
    vol.Optional("name"): _slug,
    _required("kind", f"one of {', '.join(SOURCE_KINDS)}"): _choice(*SOURCE_KINDS),
    vol.Optional("block_seconds", default=0.1): _number(0.01, 2.0),
    vol.Optional("queue_seconds", default=30.0): _number(1.0, 3600.0),
}
_SOURCE_KIND = {
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
        raise _Said(f"missing; expected one of {', '.join(SOURCE_KINDS)}", ["kind"])
    if kind not in SOURCE_KINDS:
        raise vol.Invalid(f"expected one of {', '.join(SOURCE_KINDS)}", ["kind"])
    schema = {**_SOURCE_COMMON, **_SOURCE_KIND[kind]}
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
            raise _Said(
                f"name {src['name']!r} is already used by sources[{seen[src['name']]}]; "
                "expected unique source names",
                [i, "name"],
            )
        seen[src["name"]] = i
    return out


def _labels(value: Any) -> tuple[str, ...]:
    """AudioSet display names or mids, any case, canonicalised to display names."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise vol.Invalid("expected a list of one or more AudioSet labels")
    names: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise vol.Invalid("expected an AudioSet label name or mid", [i])
        try:
            name = find(item).name
        except SatAudioError as err:
            raise _Said(str(err), [i]) from None
        if name in names:
            raise _Said(f"{item!r} is {name!r}, already listed; expected each label once", [i])
        names.append(name)
    return tuple(names)


def _event_thresholds(event: dict) -> dict:
    on = event["on_threshold"]
    off = event.setdefault("off_threshold", round(on * 0.75, 6))
    if off >= on:
        raise _Said(
            f"expected less than on_threshold ({_fmt(on)}) for hysteresis, got {_fmt(off)}",
            ["off_threshold"],
        )
    return event


_EVENT = _section(
    {
        vol.Optional("name"): _text,
        _required("labels", "a list of AudioSet labels"): _labels,
        vol.Optional("combine", default="max"): _choice(*COMBINE),
        _required("on_threshold", "a number above 0 and at most 1"): _number(0, 1, lo_open=True),
        vol.Optional("off_threshold"): _number(0, 1, lo_open=True),
        vol.Optional("min_duration_s", default=0.0): _number(0, 3600),
        vol.Optional("hold_s", default=2.0): _number(0, 3600),
        vol.Optional("cooldown_s", default=0.0): _number(0, 86400),
        vol.Optional("min_level_dbfs", default=None): _optional(_number(-120, 0)),
        vol.Optional("smoothing", default=None): _optional(_choice("none", *SMOOTHING)),
        vol.Optional("smoothing_chunks", default=3): _number(1, 100, integer=True),
    },
    "labels, on_threshold, off_threshold, ...",
    _event_thresholds,
)


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
            raise _Said(
                "expected an event key that is a slug of lowercase letters, digits and _ "
                f"(like glass_breaking), got {_show(key)}",
                [key],
            ) from None
        if event is None:
            raise vol.Invalid("expected a mapping with labels and on_threshold", [key])
        try:
            out[key] = _EVENT(event)
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
        raise _Said("missing; a client certificate needs both cert and key", [missing])
    return tls


def _mqtt_rules(mqtt: dict) -> dict:
    if mqtt.get("password") is not None and mqtt.get("password_file") is not None:
        raise _Said("give password or password_file, not both", ["password_file"])
    if mqtt.get("password_file") is not None:
        mqtt["password"] = _read_secret(mqtt["password_file"], ("mqtt", "password_file"))
    mqtt.pop("password_file", None)
    if mqtt.get("password") is not None and mqtt.get("username") is None:
        raise _Said("missing; a password needs a username", ["username"])
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

_LOGGING = _section(
    {vol.Optional("level", default="info"): _choice(*LOG_LEVELS, fold=True)},
    "level",
)


def _or_empty(section: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`section:` with nothing under it means all defaults."""
    return lambda value: section({} if value is None else value)


_TOP = {
    vol.Optional("listener", default=dict): _or_empty(_LISTENER),
    vol.Optional("model", default=dict): _or_empty(_MODEL),
    vol.Optional("sources", default=lambda: [{"kind": "mic"}]): _sources,
    vol.Optional("detection", default=dict): _or_empty(_DETECTION),
    vol.Optional("mqtt", default=None): _optional(_MQTT),
    vol.Optional("publishing", default=dict): _or_empty(_PUBLISHING),
    vol.Optional("logging", default=dict): _or_empty(_LOGGING),
}
_SCHEMA = _section(_TOP, "listener, model, sources, detection, mqtt, publishing, logging")


# ---------------------------------------------------------------------------------------------
# Errors: the one boundary where voluptuous' wording becomes ours


def _path(path: tuple | list) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(top level)"


_SECRET_KEYS = {"password", "password_file"}


def _show(value: Any, key: Any = None) -> str:
    """A bad value as the user wrote it, short, with secrets masked."""
    if key in _SECRET_KEYS and value is not None:
        return MASK
    if isinstance(value, str):
        text = repr(mask_secrets(value))
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a mapping"
    elif isinstance(value, list):
        simple = all(isinstance(v, str | int | float) or v is None for v in value)
        text = yaml.safe_dump(value, default_flow_style=True).strip() if simple else "a list"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_at(data: Any, path: list) -> tuple[bool, Any]:
    for part in path:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_dict or in_list):
            return False, None
        data = data[part]
    return True, data


def _explain(err: vol.Invalid, data: dict) -> str:
    """One line: key path, what is expected and the value that was given."""
    path = list(err.path)
    msg = err.msg
    if isinstance(err, vol.RequiredFieldInvalid | _Said):
        return f"{_path(path)}: {msg}"
    found, value = _value_at(data, path)
    if not found:
        return f"{_path(path)}: {msg}"
    return f"{_path(path)}: {msg}, got {_show(value, path[-1] if path else None)}"


# ---------------------------------------------------------------------------------------------
# Building the dataclasses


def parse_config(data: Mapping[str, Any], *, origin: str | None = None) -> Config:
    """Validate a configuration mapping (as read from YAML) and build the `Config`."""
    prefix = f"{origin}: " if origin else ""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{prefix}expected a mapping of sections (listener, model, sources, ...) "
            f"at the top level, got {_show(data)}"
        )
    try:
        expanded = _expand(dict(data), ())
        clean = _SCHEMA(expanded)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}") from None
    except vol.MultipleInvalid as err:
        raise ConfigError(f"{prefix}{_explain(err.errors[0], expanded)}") from None
    except vol.Invalid as err:
        raise ConfigError(f"{prefix}{_explain(err, expanded)}") from None
    config = _build(_plain(clean))
    if problem := _over_limits(config):
        raise ConfigError(f"{prefix}{problem}")
    return config


def _over_limits(config: Config) -> str | None:
    """What of the config goes past the protocol's limits (docs/protocol.md, Limits), which
    Home Assistant's integration enforces by dropping the whole info: one line, or None."""
    n = len(config.sources)
    if n > wire.MAX_SOURCES:
        return f"sources: expected at most {wire.MAX_SOURCES} sources, got {n}"
    for i, source in enumerate(config.sources):
        if len(source.name) > wire.MAX_TEXT:
            return f"sources[{i}].name: expected at most {wire.MAX_TEXT} characters"
    lid, name = config.listener.id, config.listener.name
    if len(lid) > wire.MAX_SLUG:
        return f"listener.id: expected at most {wire.MAX_SLUG} characters, got {len(lid)}"
    if len(name) > wire.MAX_TEXT:
        return f"listener.name: expected at most {wire.MAX_TEXT} characters, got {len(name)}"
    for event in config.detection.events:
        if len(event.labels) > wire.MAX_LABELS:
            return (
                f"detection.events.{event.key}.labels: expected at most {wire.MAX_LABELS} "
                f"labels, got {len(event.labels)}"
            )
    events = wire.published_events([s.name for s in config.sources], config.detection.events)
    if len(events) > wire.MAX_EVENTS:
        return (
            f"detection.events: {len(config.detection.events)} events on {n} sources publish "
            f"{len(events)}; expected at most {wire.MAX_EVENTS} in all"
        )
    for published in events:
        if len(published.key) > wire.MAX_SLUG:
            return (
                f"detection.events: the published event key {published.key!r} (source name and "
                f"event key) is over {wire.MAX_SLUG} characters"
            )
        if len(published.name) > wire.MAX_TEXT:
            return (
                f"detection.events: event name {_show(published.name)} is published with "
                f"{len(published.name)} characters; expected at most {wire.MAX_TEXT}"
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
        return (
            f"detection.events: the listener's info would take up to {size} bytes; expected at "
            f"most {wire.MAX_PAYLOAD_BYTES} (fewer events, labels or sources)"
        )
    return None


def _plain(value: Any) -> Any:
    """Text from the environment back to plain str, so nothing downstream sees `_FromEnv`."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return str(value) if isinstance(value, str) else value


def _build(clean: dict) -> Config:
    det = clean["detection"]
    events = tuple(
        EventConfig(
            key=key,
            name=ev.pop("name", None) or key.replace("_", " ").capitalize(),
            **{**ev, "smoothing": None if ev["smoothing"] == "none" else ev["smoothing"]},
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
    )


# ---------------------------------------------------------------------------------------------
# Printing the effective configuration


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
        "events": {ev.pop("key"): ev for ev in detection["events"]},
    }
    if mask:
        for src in out["sources"]:
            if src["url"]:
                src["url"] = mask_secrets(src["url"])
        if out["mqtt"] and out["mqtt"]["password"] is not None:
            out["mqtt"]["password"] = MASK
    return out


def to_yaml(config: Config, *, mask: bool = True) -> str:
    """The effective configuration as YAML, secrets masked; it reads back as the same config.

    Each source shows only the keys its kind takes, as a file would have them.
    """
    data = to_dict(config, mask=mask)
    for i, src in enumerate(data["sources"]):
        keys = {_key_name(k) for k in (*_SOURCE_COMMON, *_SOURCE_KIND[src["kind"]])}
        data["sources"][i] = {k: v for k, v in src.items() if k in keys}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
