"""The 527 AudioSet classes in the models' output order (models/audioset_labels.csv), and the
custom sounds' labels (`custom:NAME`, sat_audio/custom.py) whose columns follow them."""

import csv
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from sat_audio.errors import SatAudioError
from sat_audio.model.registry import data_dir

CUSTOM_PREFIX = "custom:"
"""A label of this form names a taught sound, not an AudioSet class."""
CUSTOM_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,39}")
"""A custom sound's name: a slug, as an event's key, so it is also a safe file name."""


@dataclass(frozen=True)
class Label:
    index: int
    mid: str
    name: str


@cache
def all_labels() -> tuple[Label, ...]:
    with (data_dir() / "audioset_labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    labels = tuple(Label(int(r["index"]), r["mid"], r["display_name"]) for r in rows)
    if [lab.index for lab in labels] != list(range(len(labels))):
        raise SatAudioError("audioset_labels.csv is out of order: reinstall sat-audio")
    return labels


@cache
def _by_key() -> dict[str, Label]:
    keys: dict[str, Label] = {}
    for lab in all_labels():
        keys[lab.name.casefold()] = lab
        keys[lab.mid.casefold()] = lab
    return keys


def find(query: str) -> Label:
    """The label with this display name or mid, ignoring case; else an error with close names."""
    hit = _by_key().get(query.strip().casefold())
    if hit is not None:
        return hit
    names = [lab.name for lab in all_labels()]
    needle = query.strip().casefold()
    words = [w for w in needle.replace(",", " ").split() if len(w) > 2]
    containing = [n for n in names if needle in n.casefold()]
    sharing = [n for n in names if any(w in n.casefold().split() for w in words)]
    folded = {n.casefold(): n for n in names}
    similar = [folded[c] for c in difflib.get_close_matches(needle, folded, n=3, cutoff=0.6)]
    suggestions = list(dict.fromkeys(containing + sharing + similar))[:3]
    hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise SatAudioError(f"unknown AudioSet label {query!r}{hint}")


def search(text: str) -> list[Label]:
    """Labels whose name or mid contains the text, ignoring case."""
    needle = text.casefold()
    return [lab for lab in all_labels() if needle in lab.name.casefold() or needle in lab.mid]


def label_index(name: str, custom: Sequence[str] = ()) -> int:
    """The column of a label in a chunk's scores: AudioSet's 527, then the custom labels loaded
    (custom, in their order)."""
    if name.startswith(CUSTOM_PREFIX):
        if name not in custom:
            raise SatAudioError(f"{name} is not among the custom sounds loaded")
        return len(all_labels()) + list(custom).index(name)
    return find(name).index


def custom_name(label: str) -> str:
    """The name of a custom sound (`custom:NAME` or NAME, any case), or one clear line."""
    text = label.strip()
    bare = text[len(CUSTOM_PREFIX) :] if text.casefold().startswith(CUSTOM_PREFIX) else text
    if not CUSTOM_NAME.fullmatch(bare.casefold()):
        raise SatAudioError(
            f"custom sound name {bare!r}: use 1-40 letters, digits and _ (starting with a letter "
            "or digit)"
        )
    return bare.casefold()


def canonical(text: str) -> str:
    """A configured label's one spelling: `custom:NAME` checked, or AudioSet's display name."""
    if text.strip().casefold().startswith(CUSTOM_PREFIX):
        return CUSTOM_PREFIX + custom_name(text)
    return find(text).name
