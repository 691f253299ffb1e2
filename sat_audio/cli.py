"""The `sat-audio` command: one function per subcommand, errors as one line and exit code 2."""

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sat_audio import __version__
from sat_audio.errors import SatAudioError

DEFAULT_MODEL = "SAT_T_2s"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults in --help, except empty ones (None, False) that say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        if threads < 1:
            raise SatAudioError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def cmd_tag(args: argparse.Namespace) -> int:
    """Print the top-k labels of each chunk, in upstream inference.py's format."""
    from tqdm import tqdm

    from sat_audio.audio import read_audio
    from sat_audio.engine import Engine
    from sat_audio.labels import all_labels
    from sat_audio.model.checkpoint import load_model

    _set_threads(args.threads)
    if not 1 <= args.topk <= 527:
        raise SatAudioError(f"--topk must be between 1 and 527, got {args.topk}")
    model = load_model(args.model, variant=args.variant, directory=args.model_dir)
    chunk_s = args.chunk_length or model.spec.chunk_s
    engine = Engine(model, chunk_s)
    labels = all_labels()
    waves = [(path, read_audio(path)) for path in args.files]
    for path, wave in waves:
        engine.reset()
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
    scores: Sequence[float],
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
                }
            )
        )
        return
    # upstream: timestamps are chunk index times chunk length, even for a short last chunk.
    span = f"[{index * chunk_s}s]-[{(index + 1) * chunk_s}s]"
    for k, i in enumerate(top):
        print(f"{span} Topk-{k + 1} {labels[i].name:<30} {scores[i]:.4f}")
    print()


def cmd_models(args: argparse.Namespace) -> int:
    """List, download or locate the public checkpoints."""
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
    for name in names:
        spec = get_spec(name)
        if args.action == "path":
            print(cached_path(spec, args.model_dir))
        else:
            print(ensure_checkpoint(spec, args.model_dir))
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    """Print AudioSet labels (index, mid, name), optionally only those matching SEARCH."""
    from sat_audio.labels import all_labels, search

    found = search(args.search) if args.search else list(all_labels())
    if not found:
        raise SatAudioError(f"no AudioSet label contains {args.search!r}")
    for lab in found:
        print(f"{lab.index:>3}  {lab.mid:<12} {lab.name}")
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
    parser = argparse.ArgumentParser(
        prog="sat-audio",
        description="Home sound events from SAT streaming audio tagging.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        doc = (func.__doc__ or "").strip().splitlines()[0]
        cmd = sub.add_parser(name, help=doc, description=doc, formatter_class=_HelpFormatter)
        cmd.set_defaults(func=func)
        return cmd

    model_dir_help = "folder for downloaded checkpoints (default: $SAT_AUDIO_MODEL_DIR or models/)"

    tag = add("tag", cmd_tag)
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
    tag.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    tag.add_argument("--model-dir", default=None, help=model_dir_help)

    models = add("models", cmd_models)
    models.add_argument("action", choices=["list", "download", "path"])
    models.add_argument("names", nargs="*", metavar="NAME", help="registry names")
    models.add_argument("--model-dir", default=None, help=model_dir_help)

    labels = add("labels", cmd_labels)
    labels.add_argument("search", nargs="?", metavar="SEARCH", help="part of a name or mid")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SatAudioError as err:
        print(f"sat-audio: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
