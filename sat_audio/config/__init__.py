"""The listener's configuration: typed, frozen, one dataclass per YAML section.

`load_config` finds and reads the YAML, `parse_config` validates a mapping with the one schema
and builds the dataclasses. Every problem becomes one `ConfigError` line naming the key path, the
bad value and what is expected. The package's files each own one job: `model` the dataclasses,
`files` reading YAML, `env` ${VAR} and secret files, `schema` the schema and its rules, `errors`
the wording of an error.
"""

from sat_audio.config.errors import ConfigError
from sat_audio.config.files import (
    CONFIG_ENV,
    MAX_YAML_VALUES,
    config_path,
    default_config_text,
    load_config,
    parse_config,
    to_yaml,
)
from sat_audio.config.model import (
    ClipConfig,
    ClipsConfig,
    Config,
    DetectionConfig,
    EventConfig,
    ListenerConfig,
    LoggingConfig,
    ModelConfig,
    MqttConfig,
    PublishingConfig,
    SourceConfig,
    TlsConfig,
    WebConfig,
    to_dict,
)
from sat_audio.config.schema import validate

__all__ = [
    "CONFIG_ENV",
    "MAX_YAML_VALUES",
    "ClipConfig",
    "ClipsConfig",
    "Config",
    "ConfigError",
    "DetectionConfig",
    "EventConfig",
    "ListenerConfig",
    "LoggingConfig",
    "ModelConfig",
    "MqttConfig",
    "PublishingConfig",
    "SourceConfig",
    "TlsConfig",
    "WebConfig",
    "config_path",
    "default_config_text",
    "load_config",
    "parse_config",
    "to_dict",
    "to_yaml",
    "validate",
]
