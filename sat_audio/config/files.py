"""Which file, read safely: YAML without duplicate keys or alias bombs, then validated.

`load_config` finds and reads the YAML, `parse_config` expands ${VAR} and hands the mapping to
the one schema (`schema.validate`); `to_yaml` writes the effective configuration back.
"""

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sat_audio.config.env import expand
from sat_audio.config.errors import ConfigError, reason, show
from sat_audio.config.model import Config, to_dict
from sat_audio.config.schema import SOURCE_COMMON, SOURCE_KIND, key_name, validate

CONFIG_ENV = "SAT_AUDIO_CONFIG"
"""Environment variable naming the configuration file when no path is given."""


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
    return (Path(__file__).resolve().parents[2] / "config.yaml").read_text(encoding="utf-8")


def load_config(path: Path | None = None) -> Config:
    """Read and validate a configuration file (see `config_path` for which one)."""
    found = config_path(path)
    if found is None:
        return parse_config(read_yaml(default_config_text(), "embedded defaults"))
    try:
        text = found.read_text(encoding="utf-8")
    except FileNotFoundError:
        via = f" (from ${CONFIG_ENV})" if path is None else ""
        raise ConfigError(f"{found}: no such configuration file{via}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{found}: cannot read the configuration ({reason(err)})") from None
    return parse_config(read_yaml(text, str(found)), origin=str(found))


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

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
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


def read_yaml(text: str, origin: str) -> dict:
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
            f"at the top level, got {show(data)}"
        )
    return data


def parse_config(data: Mapping[str, Any], *, origin: str | None = None) -> Config:
    """Validate a configuration mapping (as read from YAML) and build the `Config`."""
    prefix = f"{origin}: " if origin else ""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{prefix}expected a mapping of sections (listener, model, sources, ...) "
            f"at the top level, got {show(data)}"
        )
    try:
        return validate(expand(dict(data), ()))
    except ConfigError as err:
        if not prefix:
            raise
        raise ConfigError(f"{prefix}{err}") from None


def to_yaml(config: Config, *, mask: bool = True) -> str:
    """The effective configuration as YAML, secrets masked; it reads back as the same config.

    Each source shows only the keys its kind takes, as a file would have them.
    """
    data = to_dict(config, mask=mask)
    for i, src in enumerate(data["sources"]):
        keys = {key_name(k) for k in (*SOURCE_COMMON, *SOURCE_KIND[src["kind"]])}
        data["sources"][i] = {k: v for k, v in src.items() if k in keys}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
