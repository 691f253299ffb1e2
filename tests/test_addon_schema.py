"""The add-on's option schema (addon/config.yaml) derived from the listener's one schema.

Each option maps to a listener key (addon.OPTIONS); the key's check states its bounds, choices or
pattern as data (schema.Number, Choice, Match, Maybe). Written in the Supervisor's option grammar
they must be exactly what the manifest says, so a bound changed in one place fails here.
"""

from pathlib import Path
from typing import Any

import voluptuous as vol
import yaml

from sat_audio import addon
from sat_audio.config import schema
from sat_audio.config.schema import Choice, Match, Maybe, Number

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = yaml.safe_load((ROOT / "addon" / "config.yaml").read_text(encoding="utf-8"))


def _bound(x: float | None) -> str:
    """A bound as the grammar writes it; it has no negative numbers, so those are left out."""
    if x is None or x < 0:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def supervisor_type(check: Any) -> str:
    """A listener check in the Supervisor's option grammar; a check with no data of its own
    (text, a device, labels) reads text, which the add-on passes on as it is."""
    if isinstance(check, Maybe):
        check = check.check
    if check is schema.BOOLEAN:
        return "bool"
    if isinstance(check, Number):
        kind = "int" if check.integer else "float"
        bounds = (_bound(check.lo), _bound(check.hi))
        return f"{kind}({bounds[0]},{bounds[1]})" if any(bounds) else kind
    if isinstance(check, Choice):
        return f"list({'|'.join(check.options)})"
    if isinstance(check, Match):
        return f"match(^{check.pattern.pattern}$)"
    return "str"


def _key_path(path: tuple[str | int, ...]) -> str:
    return ".".join("*" if isinstance(part, int) else part for part in path)


def derived_schema() -> dict[str, Any]:
    """The add-on's option schema as the listener's schema says it, "?" aside."""
    streaming = addon.streaming_models()
    derived: dict[str, Any] = {}
    for option, path in addon.OPTIONS.items():
        if option == "model":  # the UI offers the streaming models, each a valid model.name
            derived[option] = f"list({'|'.join(streaming)})"
        elif option == "events":
            # a sound event's keys and a loud one's; the clip's flattened to clip_<key>
            keys = {**schema.field("detection.events.*").keys, **schema.LOUD_EVENT.keys}
            fields = {schema.key_name(k): supervisor_type(v) for k, v in keys.items()}
            del fields["clip"]
            clip = schema.field("detection.events.*.clip").check.keys
            fields |= {f"clip_{schema.key_name(k)}": supervisor_type(v) for k, v in clip.items()}
            derived[option] = [{"id": supervisor_type(schema.EVENT_KEY), **fields}]
        else:
            derived[option] = supervisor_type(schema.field(_key_path(path)))
    return derived


def _without_optional(typ: Any) -> Any:
    if isinstance(typ, list):
        return [_without_optional(typ[0])]
    if isinstance(typ, dict):
        return {k: _without_optional(v) for k, v in typ.items()}
    return typ.removesuffix("?")


def test_manifest_schema_is_derived_from_the_listeners():
    manifest = _without_optional(MANIFEST["schema"])
    derived = derived_schema()
    assert set(manifest) == set(derived), "an option maps to no listener key, or none maps to it"
    (event,) = manifest["events"]
    (derived_event,) = derived["events"]
    # the add-on shows some of an event's fields; each is typed as the listener checks it
    assert set(event) <= set(derived_event), set(event) - set(derived_event)
    wrong = {
        f"events.{k}": (v, derived_event[k]) for k, v in event.items() if v != derived_event[k]
    }
    wrong |= {k: (v, derived[k]) for k, v in manifest.items() if k != "events" and v != derived[k]}
    assert not wrong, f"addon/config.yaml disagrees with the listener (manifest, derived): {wrong}"


def test_streaming_models_are_model_names_the_listener_takes():
    check = schema.field("model.name")
    assert all(check(name) == name for name in addon.streaming_models())


def test_what_the_listener_requires_the_addon_requires():
    """A field every event needs has no "?" in the add-on's schema. A sound event's labels and
    on_threshold, and a loud one's on_dbfs, are optional there (the other kind has none): the
    listener's schema says when one is missing (tests/test_addon_mode.py)."""
    sound, loud = schema.field("detection.events.*"), schema.LOUD_EVENT
    required = [{schema.key_name(k) for k in e.keys if isinstance(k, vol.Required)}
                for e in (sound, loud)]  # fmt: skip
    assert required == [{"labels", "on_threshold"}, {"on_dbfs"}]
    assert not MANIFEST["schema"]["events"][0]["name"].endswith("?")


def test_every_option_reaches_the_key_it_names(tmp_path: Path):
    """OPTIONS, which names an option in the schema's errors, is where options_dict puts it."""
    reached = set()
    for source in ({"device": "USB Audio"}, {"stream_url": "rtsp://cam.local/s"}):
        clips = {"clips_format": "opus", "clips_publish": False, "clips_max_count": 5,
                 "clips_max_age_days": 2.5, "clips_max_total_mb": 50.0}  # fmt: skip
        options = {**MANIFEST["options"], "chunk_seconds": 1.5, **clips, **source}
        config = addon.options_dict(options, tmp_path)
        for option, path in addon.OPTIONS.items():
            if option not in options:
                continue
            value: Any = config
            for part in path:
                value = value[part]
            if option == "events":
                ids = [e.get("id") or addon.event_id(e["name"]) for e in options["events"]]
                assert list(value) == ids
            else:
                assert value == options[option], option
            reached.add(option)
    assert reached == set(addon.OPTIONS)
