"""Error wording: the one boundary where voluptuous' messages become one line of ours.

Each line names the key path, what is expected and the value given, with secrets masked.
"""

from collections.abc import Sequence
from typing import Any

import voluptuous as vol
import yaml

from sat_audio.errors import SatAudioError
from sat_audio.redact import MASK, mask_secrets


class ConfigError(SatAudioError):
    """A configuration problem, reported as one line naming the key path.

    `path` is the key path as data (None when the problem has none) and `problem` the line
    without it, so a front door with its own names (the add-on's options) can say it its way.
    """

    def __init__(self, problem: str, path: Sequence[Any] | None = None) -> None:
        super().__init__(problem if path is None else f"{path_text(path)}: {problem}")
        self.problem = problem
        self.path = None if path is None else tuple(path)


class Said(vol.Invalid):
    """An error whose message already says everything; `explain` adds only the path."""


def reason(err: Exception) -> str:
    """Why a file could not be read, without the errno prefix."""
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def path_text(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(top level)"


_SECRET_KEYS = {"password", "password_file"}


def show(value: Any, key: Any = None) -> str:
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


def explain(err: vol.Invalid, data: Any) -> ConfigError:
    """One line: key path, what is expected and the value that was given."""
    path = list(err.path)
    msg = err.msg
    if isinstance(err, vol.RequiredFieldInvalid | Said):
        return ConfigError(msg, path)
    found, value = _value_at(data, path)
    if not found:
        return ConfigError(msg, path)
    return ConfigError(f"{msg}, got {show(value, path[-1] if path else None)}", path)
