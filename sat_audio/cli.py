"""The `sat-audio` command: one function per subcommand, errors as one line and exit code 2."""

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sat_audio import BACKENDS, PRECISIONS, __version__
from sat_audio.errors import SatAudioError
from sat_audio.redact import log_to_stderr, mask_secrets

if TYPE_CHECKING:
    import numpy as np

    from sat_audio.config import Config

DEFAULT_MODEL = "SAT_T_2s"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults in --help, except empty ones (None, False) that say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake as one line and exit code 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sat-audio: error: {message} (see `{self.prog} --help`)\n")


def _tag_backend(choice: str | None) -> str:
    """--backend, else the configuration's model.backend if there is a configuration file, else
    onnx (which needs no torch)."""
    if choice is not None:
        return choice
    from sat_audio.config import config_path, load_config

    found = config_path(None)
    return load_config(found).model.backend if found is not None else "onnx"


def cmd_tag(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sat_audio.audio import read_audio
    from sat_audio.config import ModelConfig
    from sat_audio.engine import Engine, load_scorer
    from sat_audio.labels import all_labels

    if args.threads is not None and args.threads < 1:
        raise SatAudioError(f"--threads must be at least 1, got {args.threads}")
    if not 1 <= args.topk <= 527:
        raise SatAudioError(f"--topk must be between 1 and 527, got {args.topk}")
    backend = _tag_backend(args.backend)
    model = ModelConfig(
        args.model, args.model_dir, threads=args.threads or 0, backend=backend, variant=args.variant
    )
    scorer = load_scorer(model)
    chunk_s = args.chunk_length or scorer.spec.chunk_s
    engine = Engine(scorer, chunk_s)
    labels = all_labels()
    waves = [(path, read_audio(path)) for path in args.files]
    for path, wave in waves:
        # upstream: inference.py primes the memory once and carries it from file to file.
        engine.reset(keep_memory=True)
        if not args.json:
            print(f"===== {path!s:^20} =====")
        n_chunks = -(-wave.size // engine.chunk_samples)
        with tqdm(
            total=n_chunks,
            unit="chunk",
            desc=path.name,
            leave=False,
            disable=None if n_chunks > 30 else True,
        ) as bar:
            for start in range(0, wave.size, engine.chunk_samples):
                engine.feed("default", wave[start : start + engine.chunk_samples])
                last = start + engine.chunk_samples >= wave.size
                for chunk in engine.flush("default") if last else engine.drain():
                    _print_chunk(path, chunk.index, chunk_s, chunk.scores, labels, args)
                bar.update()
    return 0


def _print_chunk(
    path: Path,
    index: int,
    chunk_s: float,
    scores: "Sequence[float] | np.ndarray",
    labels: Sequence,
    args: argparse.Namespace,
) -> None:
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[: args.topk]
    if args.json:
        print(
            json.dumps(
                {
                    "file": str(path),
                    "chunk": index,
                    "start": index * chunk_s,
                    "end": (index + 1) * chunk_s,
                    "top": [
                        {
                            "label": labels[i].name,
                            "mid": labels[i].mid,
                            "index": i,
                            "score": round(float(scores[i]), 6),
                        }
                        for i in top
                    ],
                },
                allow_nan=False,
            )
        )
        return
    # upstream: timestamps are chunk index times chunk length, even for a short last chunk.
    span = f"[{index * chunk_s}s]-[{(index + 1) * chunk_s}s]"
    for k, i in enumerate(top):
        print(f"{span} Topk-{k + 1} {labels[i].name:<30} {scores[i]:.4f}")
    print()


def cmd_models(args: argparse.Namespace) -> int:
    from sat_audio.model.checkpoint import cached_path, ensure_checkpoint
    from sat_audio.model.registry import get_spec, registry

    if args.action == "list":
        print(f"{'name':<24}{'kind':<8}{'chunk':>6}{'mAP':>7}  checkpoint")
        for spec in registry().values():
            path = cached_path(spec, args.model_dir)
            state = str(path) if path.is_file() else "not downloaded"
            print(f"{spec.name:<24}{spec.kind:<8}{spec.chunk_s:>5}s{spec.map:>7.2f}  {state}")
        return 0
    names = args.names or ([DEFAULT_MODEL] if args.action == "download" else [])
    if not names:
        raise SatAudioError("name at least one model")
    if args.action == "export-onnx":
        return _export_onnx(names, args.model_dir, args.precision, args.variant)
    for name in names:
        spec = get_spec(name)
        if args.action == "path":
            print(cached_path(spec, args.model_dir))
        else:
            print(ensure_checkpoint(spec, args.model_dir))
    return 0


def _export_onnx(
    names: list[str], model_dir: str | None, precision: str, variant: str | None
) -> int:
    """Export streaming models for model.backend onnx, each beside its checkpoint; no torch."""
    from sat_audio.model.checkpoint import read_weights
    from sat_audio.model.onnx_export import export_onnx
    from sat_audio.model.onnx_int8 import int8_plan
    from sat_audio.model.onnx_runtime import onnx_path
    from sat_audio.model.registry import registry

    for name in names:
        if precision == "int8" and (variant or name in registry()):
            int8_plan(variant or name)  # refused before a download; another checkpoint at export
        path = onnx_path(name, model_dir, precision)
        weights = read_weights(name, variant=variant, directory=model_dir)
        print(export_onnx(weights, path, precision))
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from sat_audio.labels import all_labels, search

    found = search(args.search) if args.search else list(all_labels())
    if not found:
        raise SatAudioError(f"no AudioSet label contains {args.search!r}")
    for lab in found:
        print(f"{lab.index:>3}  {lab.mid:<12} {lab.name}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from sat_audio.config import config_path, load_config, to_yaml

    config = load_config(args.path)
    found = config_path(args.path)
    origin = str(found) if found is not None else "the embedded defaults"
    print(f"# effective configuration from {origin} (secrets masked)")
    print(to_yaml(config), end="")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    from sat_audio import SAMPLE_RATE
    from sat_audio.audio import read_audio
    from sat_audio.config import load_config
    from sat_audio.custom import custom_labels, with_custom_sounds
    from sat_audio.engine import Engine, load_scorer
    from sat_audio.rules import Detector

    config = load_config(args.config)
    if not config.detection.events:
        raise SatAudioError("the configuration has no events under detection.events to detect")
    model = config.model
    if args.model is not None or args.variant is not None:
        # the configuration's variant is its own checkpoint's, not -m's
        model = replace(model, name=args.model or model.name, variant=args.variant)
    scorer = load_scorer(model)
    chunk_s = model.chunk_seconds or scorer.spec.chunk_s
    custom = custom_labels(e.labels for e in config.detection.events)
    engine = Engine(with_custom_sounds(scorer, custom, chunk_s, model.dir), chunk_s)
    waves = [(path, read_audio(path)) for path in args.files]
    for path, wave in waves:
        # Each recording is its own stream, starting from silence as the listener's does, so a
        # file's events do not depend on which files were named before it.
        engine.reset()
        detector = Detector(
            config.detection.events, config.detection.min_level_dbfs, source=path.name
        )
        if not args.json and len(waves) > 1:
            print(f"===== {path} =====")
        engine.feed("default", wave)
        found = detector.audio(wave)  # loud events, on the level of the audio alone
        found += [t for chunk in engine.flush("default") for t in detector.update(chunk)]
        found += detector.close(wave.size / SAMPLE_RATE)
        found.sort(key=lambda t: t.start_s if t.end_s is None else t.end_s)  # stable: in order
        for t in found:
            # a loud event has no label, and its scores are levels in dBFS
            label, unit = (t.label, "") if t.label is not None else ("(level)", " dBFS")
            if args.json:
                print(json.dumps({"file": str(path), **asdict(t)}, allow_nan=False))
            elif t.type == "start":
                print(f"{t.start_s:8.2f}s  start  {t.event:<16} {label:<28} "
                      f"score {t.score:.3f}{unit}")  # fmt: skip
            else:
                print(
                    f"{t.end_s:8.2f}s  end    {t.event:<16} {label:<28} "
                    f"score {t.score:.3f}  peak {t.peak:.3f}{unit}  lasted {t.duration_s:.2f}s"
                )
    return 0


def cmd_teach(args: argparse.Namespace) -> int:
    from sat_audio.audio import read_audio
    from sat_audio.config import load_config
    from sat_audio.custom import sound_path, teach
    from sat_audio.engine import load_scorer
    from sat_audio.labels import custom_name

    name = custom_name(args.name)
    if not args.clips and args.record is None:
        raise SatAudioError("name at least one example CLIP, or --record SECONDS")
    config = load_config(args.config)
    examples = [(path.name, read_audio(path)) for path in args.clips]
    if args.record is not None:
        examples.append(_record(config, args.source, args.record))
    background = [(path.name, read_audio(path)) for path in args.background]
    scorer = load_scorer(config.model)
    chunk_s = config.model.chunk_seconds or scorer.spec.chunk_s
    sound, fit = teach(name, scorer, examples, background, chunk_s)
    path = sound.save(sound_path(name, config.model.dir))
    print(
        f"taught {sound.label} on {sound.variant} from {len(examples)} example(s): "
        f"{fit.recall:.0%} of {fit.example_chunks} example chunks and "
        f"{fit.false_positive_rate:.1%} of {fit.background_chunks} background chunks score "
        "0.5 or more"
    )
    print(f"saved {path}; use the label {sound.label} in an event's labels")
    return 0


def _record(config: "Config", source: str | None, seconds: float) -> tuple[str, "np.ndarray"]:
    """An example recorded now from a configured source (the first unless named)."""
    from sat_audio.custom import record
    from sat_audio.sources import open_source

    names = [s.name for s in config.sources]
    chosen = [s for s in config.sources if source in (None, s.name)]
    if not chosen:
        raise SatAudioError(f"no source {source!r} in the configuration; sources: {names}")
    src = open_source(chosen[0])
    print(f"recording {seconds:g} s from source {src.name}: make the sound now", file=sys.stderr)
    src.start()
    try:
        wave = record(src, seconds, timeout_s=seconds + 30.0)
    finally:
        src.stop()
    return f"{src.name} (recorded)", wave


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sat_audio.calibrate import as_json, calibrate_files, format_table, yaml_snippet
    from sat_audio.config import load_config

    reports = calibrate_files(
        load_config(args.config),
        args.recordings,
        args.positive or [],
        per_day=args.per_day,
        step=args.step,
        lowest=args.lowest,
        keep_off=args.keep_off,
        progress=not args.json,
    )
    if args.json:
        print(as_json(reports, args.per_day))
    else:
        print(format_table(reports, args.per_day))
        print()
        print(yaml_snippet(reports), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sat_audio.config import load_config
    from sat_audio.listener import serve

    config = load_config(args.config)
    log_to_stderr(args.log_level or config.logging.level)
    return serve(config)


def cmd_addon(args: argparse.Namespace) -> int:
    from sat_audio import addon

    return addon.run(args.options, args.supervisor, args.data, args.health_file)


def cmd_health(args: argparse.Namespace) -> int:
    from sat_audio.addon import check_health

    problem = check_health(args.file, args.stall)
    print(problem or "healthy", file=sys.stderr if problem else sys.stdout)
    return 1 if problem else 0  # Docker reserves exit code 2


def cmd_devices(args: argparse.Namespace) -> int:
    from sat_audio.sources.mic import input_devices

    devices = input_devices()
    if not devices:
        raise SatAudioError("no audio input devices found")
    width = max(4, *(len(d.name) for d in devices))
    print(f"{'index':>5}  {'name':<{width}}  {'host API':<12}{'channels':>8}  {'rate':>6}")
    for d in devices:
        mark = "  (default)" if d.is_default else ""
        print(
            f"{d.index:>5}  {d.name:<{width}}  {d.hostapi:<12}{d.channels:>8}"
            f"  {d.default_rate:>6.0f}{mark}"
        )
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sat-audio",
        description="Home sound events from SAT streaming audio tagging.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], summary: str
    ) -> argparse.ArgumentParser:
        cmd = sub.add_parser(
            name, help=summary, description=summary, formatter_class=_HelpFormatter
        )
        cmd.set_defaults(func=func)
        return cmd

    model_dir_help = (
        "folder for downloaded checkpoints (default: $SAT_AUDIO_MODEL_DIR, else "
        "${XDG_CACHE_HOME:-~/.cache}/sat-audio/models)"
    )

    tag = add(
        "tag", cmd_tag, "Print the top-k labels of each chunk, in upstream inference.py's format."
    )
    tag.add_argument("files", nargs="+", type=Path, metavar="FILE", help="wav, flac or ogg files")
    tag.add_argument(
        "-m", "--model", default=DEFAULT_MODEL, help="registry name, checkpoint path or URL"
    )
    tag.add_argument(
        "--variant", help="architecture of a checkpoint whose file name is not upstream's"
    )
    tag.add_argument(
        "-c",
        "--chunk-length",
        type=_positive_float,
        default=None,
        help="chunk length in seconds (default: the model's, 2.0 for SAT_T_2s)",
    )
    tag.add_argument("-k", "--topk", type=int, default=3, help="labels printed per chunk")
    tag.add_argument("--json", action="store_true", help="one JSON object per chunk")
    tag.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="what runs the model (default: the configuration's model.backend, or onnx without "
        "a configuration file); torch needs the torch extra",
    )
    tag.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: the runtime's own)"
    )
    tag.add_argument("--model-dir", default=None, help=model_dir_help)

    models = add(
        "models", cmd_models, "List, download or locate the public checkpoints; export for onnx."
    )
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, summary: str, names: str | None) -> argparse.ArgumentParser:
        cmd = actions.add_parser(
            name, help=summary, description=summary, formatter_class=_HelpFormatter
        )
        if names:
            cmd.add_argument("names", nargs="*", metavar="NAME", help=names)
        cmd.add_argument("--model-dir", default=None, help=model_dir_help)
        return cmd

    action("list", "List the registry's models and which are downloaded.", None)
    action("download", "Download checkpoints.", f"registry names (default: {DEFAULT_MODEL})")
    action("path", "Print where checkpoints are kept.", "registry names")
    export = action(
        "export-onnx",
        "Write streaming models' graphs beside their checkpoints, for model.backend onnx.",
        "registry names or checkpoint paths",
    )
    export.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="the weights' precision, as model.precision",
    )
    export.add_argument(
        "--variant", help="architecture of checkpoints whose file name is not upstream's"
    )

    labels = add(
        "labels",
        cmd_labels,
        "Print AudioSet labels (index, mid, name), optionally only those matching SEARCH.",
    )
    labels.add_argument("search", nargs="?", metavar="SEARCH", help="part of a name or mid")

    add(
        "devices",
        cmd_devices,
        "List audio input devices for mic sources (index, name, host API, channels, rate).",
    )

    config = add(
        "config",
        cmd_config,
        "Validate a configuration and print it as the listener sees it, secrets masked.",
    )
    config.add_argument("action", choices=["check"])
    config.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="configuration file (default: $SAT_AUDIO_CONFIG, ./config.yaml, built-in defaults)",
    )

    detect = add(
        "detect",
        cmd_detect,
        "Run the event rules on audio files and print each event's start and end.",
    )
    detect.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="wav, flac or ogg files"
    )
    detect.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $SAT_AUDIO_CONFIG, ./config.yaml, built-in defaults)",
    )
    detect.add_argument("-m", "--model", default=None, help="model instead of the config's")
    detect.add_argument(
        "--variant",
        help="architecture of a checkpoint whose file name is not upstream's (default: the "
        "config's model.variant, unless -m is given)",
    )
    detect.add_argument("--json", action="store_true", help="one JSON object per transition")

    teach = add(
        "teach",
        cmd_teach,
        "Teach a sound of your own from a few examples; events then use the label custom:NAME.",
    )
    teach.add_argument("name", metavar="NAME", help="the sound's name: a-z, 0-9 and _")
    teach.add_argument(
        "clips",
        nargs="*",
        type=Path,
        metavar="CLIP",
        help="example recordings, 3-5 work best (wav, flac or ogg; any rate; a saved clip)",
    )
    teach.add_argument(
        "--background",
        nargs="+",
        type=Path,
        default=[],
        metavar="FILE",
        help="recordings of the place without the sound (generated noise is always added)",
    )
    teach.add_argument(
        "--record",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="also record an example of this many seconds from a configured source, now",
    )
    teach.add_argument("--source", default=None, help="the source --record uses (default: first)")
    teach.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="configuration whose model (and model.dir) the sound is taught for (default: "
        "$SAT_AUDIO_CONFIG, ./config.yaml, built-in defaults)",
    )

    calibrate = add(
        "calibrate",
        cmd_calibrate,
        "Replay every event's rules over recordings of the room's ordinary life: score "
        "percentiles, false alarms a day, and the lowest on_threshold giving at most --per-day.",
    )
    calibrate.add_argument(
        "recordings",
        nargs="+",
        type=Path,
        metavar="RECORDING",
        help="hours of the room without the target sounds (wav, flac or ogg; any sample rate)",
    )
    calibrate.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $SAT_AUDIO_CONFIG, ./config.yaml, built-in defaults)",
    )
    calibrate.add_argument(
        "--positive",
        nargs="+",
        action="extend",
        type=Path,
        metavar="CLIP",
        help="clips of the target sounds: each one's peak score and margin to the suggestion",
    )
    calibrate.add_argument(
        "--per-day",
        type=_positive_float,
        default=1.0,
        help="false alarms a day the suggested thresholds may give",
    )
    calibrate.add_argument(
        "--step", type=_positive_float, default=0.01, help="spacing of the thresholds tried"
    )
    calibrate.add_argument(
        "--lowest",
        type=_positive_float,
        default=0.05,
        help="lowest on_threshold suggested: a room that never scores an event says little "
        "about how low it could go",
    )
    calibrate.add_argument(
        "--keep-off",
        choices=["ratio", "distance"],
        default="ratio",
        help="off_threshold follows a new on_threshold keeping the configured off/on ratio, or "
        "on - off distance",
    )
    calibrate.add_argument("--json", action="store_true", help="one JSON document")

    run = add(
        "run",
        cmd_run,
        "Run the listener: sources -> model -> event rules -> MQTT (or stdout without a broker).",
    )
    run.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $SAT_AUDIO_CONFIG, ./config.yaml, built-in defaults)",
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="log detail on stderr (default: the config's logging.level, info)",
    )

    from sat_audio import addon

    addon_cmd = add(
        "addon",
        cmd_addon,
        "Run as the Home Assistant add-on: options.json and the Supervisor's MQTT broker.",
    )
    addon_cmd.add_argument(
        "--options", type=Path, default=None, help="add-on options (default: DATA/options.json)"
    )
    addon_cmd.add_argument(
        "--supervisor", default=addon.SUPERVISOR_URL, help="the Supervisor API's base URL"
    )
    addon_cmd.add_argument(
        "--data", type=Path, default=addon.DATA_DIR, help="persistent folder (models go in it)"
    )
    addon_cmd.add_argument(
        "--health-file", type=Path, default=addon.HEALTH_FILE, help="heartbeat file to write"
    )

    health = add(
        "health",
        cmd_health,
        "Exit 0 if the add-on's listener is analysing audio, else 1 (Docker's HEALTHCHECK).",
    )
    health.add_argument("--file", type=Path, default=addon.HEALTH_FILE, help="heartbeat file")
    health.add_argument(
        "--stall",
        type=_positive_float,
        default=addon.STALL_S,
        help="seconds without analysed audio that count as unhealthy",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SatAudioError as err:
        print(f"sat-audio: error: {mask_secrets(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
