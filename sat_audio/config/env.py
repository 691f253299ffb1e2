"""Values from outside the file: ${VAR} from the environment, passwords from secret files."""

import os
import re
from pathlib import Path
from typing import Any

from sat_audio.config.errors import ConfigError, reason

_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class FromEnv(str):
    """Text that came from an environment variable: number and boolean keys may parse it."""


def expand(value: Any, path: tuple) -> Any:
    """Replace ${VAR} in every string with the environment variable; $${VAR} stays literal.

    Environment variables are text, so a key expecting a number or true/false reads "1883" or
    "true" from one (only from one: in YAML itself, quoted "1883" is still an error).
    """
    if isinstance(value, dict):
        return {k: expand(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, (*path, i)) for i, v in enumerate(value)]
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
                f"expected ${{NAME}} with a variable name of letters, digits and _, "
                f"got ${{{name}}}",
                path,
            )
        if name not in os.environ:
            raise ConfigError(f"environment variable {name} is not set", path)
        used = True
        return os.environ[name]

    text = _VAR.sub(sub, value)
    return FromEnv(text) if used else text


def read_secret(file: str, path: tuple) -> str:
    try:
        secret = Path(file).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {file!r} ({reason(err)})", path) from None
    if not secret:
        raise ConfigError(f"{file!r} is empty; expected the password in it", path)
    return secret
