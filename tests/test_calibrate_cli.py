"""`sat-audio calibrate`: the real model (onnx) over generated recordings of a room, checked
against the listener's Detector replaying the same chunks; positive clips; bad input."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from sat_audio.audio import read_audio
from sat_audio.calibrate import DAY_S, Series, calibrate_files, calibrate_series, read_blocks
from sat_audio.cli import main
from sat_audio.config import load_config, parse_config
from sat_audio.custom import sound_path
from sat_audio.engine import ChunkResult, Engine, load_scorer
from sat_audio.rules import Detector
from tests.checkpoints import save_upstream, upstream_name
from tests.test_cli_detect import loud_fires
from tests.test_custom import a_sound
from tests.waiting import PATIENCE_S

RATE = 16000
EVENTS = """\
detection:
  events:
    glass:
      labels: [Glass, Shatter]
      on_threshold: 0.5
      smoothing: median
      hold_s: 4
      cooldown_s: 30
    dog:
      labels: [Dog]
      on_threshold: 0.4
      off_threshold: 0.3
      min_duration_s: 2
      smoothing: ema
"""


def room(minutes: float, seed: int = 0) -> np.ndarray:
    """A quiet room (-100 dBFS) with short sounds now and then (0.05 to 1 s, -80 to -30 dBFS).

    The checkpoint's labels score near 1 on loud patches and 0 on quiet ones, so chunks partly
    covered by a sound score in between, and smoothing spreads them: a range of scores with a
    few hundred chunks a minute of model work, cheaper than any realistic generator.
    """
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * RATE)
    wave = (10 ** (-100 / 20) * rng.standard_normal(n)).astype(np.float32)
    for start in rng.integers(0, n - RATE, int(minutes * 6)):
        length = int(rng.uniform(0.05, 1.0) * RATE)
        gain = 10 ** (rng.uniform(-80, -30) / 20)
        wave[start : start + length] += gain * rng.standard_normal(length).astype(np.float32)
    return wave


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configuration whose model (on onnx) fires Glass and Dog while the audio is loud."""
    folder = tmp_path_factory.mktemp("calibrate")
    checkpoint = save_upstream(loud_fires(["Glass", "Dog"]), folder / upstream_name("SAT_T_2s"))
    path = folder / "config.yaml"
    path.write_text(f'model: {{name: "{checkpoint}", backend: onnx}}\n{EVENTS}')
    return path


def chunks_of(config: Path, wave: np.ndarray) -> list[ChunkResult]:
    """The chunks the listener's engine gives for a recording, from a fresh memory."""
    model = load_config(config).model
    engine = Engine(load_scorer(model), model.chunk_seconds or 2.0)
    engine.feed("default", wave)
    return engine.flush("default")


def starts(config: Path, chunks: list[ChunkResult], key: str, on: float, off: float) -> int:
    """Starts of one event with these thresholds, as the listener's Detector counts them."""
    detection = load_config(config).detection
    [event] = [e for e in detection.events if e.key == key]
    tuned = type(event)(**{**vars(event), "on_threshold": on, "off_threshold": off})
    det = Detector([tuned], detection.min_level_dbfs, source="room")
    return sum(t.type == "start" for c in chunks for t in det.update(c))


def calibrate(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sat_audio", "calibrate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=20 * PATIENCE_S,
        check=False,
    )


@pytest.mark.slow
def test_half_an_hour_keeps_the_promise(config: Path, tmp_path: Path):
    """Half an hour of a room (900 chunks: about 10 s of model time on a busy 2-core machine,
    while a day would take minutes; the rules over several days are test_calibrate's, on
    coarse chunks): at 96 a day two starts are allowed, at 1 a day none. For each event the
    listener's Detector over the same chunks gives at most that at the suggestion and more one
    step lower, and the current settings' count matches."""
    wave = room(30)
    recording = tmp_path / "room.flac"
    sf.write(recording, wave, RATE, subtype="PCM_24")
    done = calibrate(recording, "-c", config, "--json", "--per-day", "96")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["audio_s"] == pytest.approx(1800.0)
    chunks = chunks_of(config, wave)
    for event in report["events"]:
        key, on, lower = event["key"], event["suggested_on"], event["lower_on"]
        assert on is not None and lower is not None, event
        assert event["starts"] == starts(
            config, chunks, key, event["on_threshold"], event["off_threshold"]
        )
        assert event["per_day"] == pytest.approx(event["starts"] * 48)
        assert starts(config, chunks, key, on, event["suggested_off"]) <= 2
        assert starts(config, chunks, key, lower, round(lower * 0.75, 6)) > 2
        assert lower == pytest.approx(on - 0.01)
    events = load_config(config).detection.events
    for strict in calibrate_series(Series.from_chunks(chunks, events), events):
        assert strict.suggested_starts == 0 < strict.lower_starts
        assert strict.audio_s / DAY_S == pytest.approx(1 / 48)


@pytest.fixture(scope="module")
def short_room(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("room") / "room.wav"
    sf.write(path, room(1.5, seed=5), RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A loud 8 s sound in 10 s, at 44.1 kHz stereo (resampled as detect does), and a quiet one."""
    folder = tmp_path_factory.mktemp("clips")
    rate = 44100
    rng = np.random.default_rng(2)
    loud = np.zeros((10 * rate, 2), np.float32)
    loud[rate : 9 * rate] = 0.05 * rng.standard_normal((8 * rate, 2))
    quiet = 1e-5 * rng.standard_normal(6 * RATE).astype(np.float32)
    sf.write(folder / "bark.wav", loud, rate, subtype="FLOAT")
    sf.write(folder / "hush.flac", quiet, RATE, subtype="PCM_16")
    return folder / "bark.wav", folder / "hush.flac"


def test_positive_clips_and_snippet(
    config: Path, short_room: Path, clips: tuple[Path, Path], capsys: pytest.CaptureFixture
):
    """Through the real command (a subprocess): a loud clip peaks near 1 with a positive margin
    over the suggestion and would start each event; a quiet one falls short. The printed table
    shows the suggestions and the snippet, merged into the configuration, passes the schema."""
    done = calibrate(short_room, "-c", config, "--json", "--positive", *clips)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for event in report["events"]:
        bark, hush = event["positives"]
        assert (bark["name"], hush["name"]) == ("bark.wav", "hush.flac")
        assert bark["peak"] > 0.9 and bark["fires"]
        assert bark["margin"] == pytest.approx(bark["peak"] - event["suggested_on"])
        assert hush["peak"] < 0.1 and not hush["fires"] and hush["margin"] < 0

    assert main(["calibrate", str(short_room), "-c", str(config), "--positive", str(clips[0])]) == 0
    text = capsys.readouterr().out
    assert "0.03 h of audio" in text
    table, snippet = text.rsplit("\n\n", 1)
    assert snippet.startswith("# suggested thresholds")
    rows = {tuple(line.split()[:2]) for line in table.splitlines() if line}
    assert {("glass", "bark.wav"), ("dog", "bark.wav")} <= rows
    for event in report["events"]:
        [row] = [
            line
            for line in table.splitlines()
            if line.split()[:1] == [event["key"]] and "|" in line
        ]
        assert row.split(" | ")[2].split()[:2] == [
            f"{event['suggested_on']:.3f}",
            f"{event['suggested_off']:.3f}",
        ]
    raw = yaml.safe_load(config.read_text())
    for key, values in yaml.safe_load(snippet)["detection"]["events"].items():
        assert set(values) == {"on_threshold", "off_threshold"}
        raw["detection"]["events"][key].update(values)
    parse_config(raw)


def test_counts_match_detect_with_custom_and_loud_events(
    config: Path, short_room: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """With the current settings, calibrate counts the starts `sat-audio detect` prints for the
    same recording, for an event on a custom:NAME label (its column appended as detect appends
    it) and a loud event (on its frames' levels) too."""
    folder = tmp_path / "models"
    a_sound("door").save(sound_path("door", folder))
    raw = yaml.safe_load(config.read_text())
    raw["model"]["dir"] = str(folder)
    raw["detection"]["events"]["door"] = {"labels": ["custom:door", "Glass"], "on_threshold": 0.6}
    raw["detection"]["events"]["bang"] = {"kind": "loud", "on_dbfs": -50, "min_duration_s": 0.2}
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["detect", "--json", "-c", str(path), str(short_room)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    detected = Counter(t["event"] for t in lines if t["type"] == "start")
    reports = calibrate_files(load_config(path), [short_room])
    assert {r.key: r.starts for r in reports} == {
        k: detected[k] for k in ("glass", "dog", "door", "bang")
    }
    assert detected["door"] > 0 and detected["bang"] > 0
    assert {r.key: r.kind for r in reports}["bang"] == "loud"


def test_blocks_read_as_detect_reads(noise_wav: Path, short_room: Path):
    """Recordings are read in blocks (hours never sit in memory) but give detect's samples:
    exactly at 16 kHz, and through the same resampler otherwise."""
    assert np.array_equal(
        np.concatenate(list(read_blocks(short_room, 7.3))), read_audio(short_room)
    )
    streamed = np.concatenate(list(read_blocks(noise_wav, 0.7)))
    whole = read_audio(noise_wav)
    assert streamed.size == whole.size
    assert np.abs(streamed - whole).max() < 1e-3


def one_line(capsys: pytest.CaptureFixture, *argv: str | Path) -> str:
    """Run the command in-process; it must fail with exit code 2 and one line on stderr."""
    code = main(["calibrate", *map(str, argv)])
    out, err = capsys.readouterr()
    assert (code, out, err.count("\n")) == (2, "", 1), (code, out, err)
    return err


def test_bad_input_is_one_line(
    config: Path, short_room: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), RATE)
    blip = tmp_path / "blip.wav"
    sf.write(blip, np.zeros(800, np.float32), RATE)
    no_events = tmp_path / "none.yaml"
    no_events.write_text(config.read_text().split("detection:")[0] + "detection: {events: {}}\n")

    err = one_line(capsys, tmp_path / "missing.flac", "-c", config)
    assert err == f"sat-audio: error: {tmp_path / 'missing.flac'}: no such file\n"
    assert "notes.wav: not a readable audio file" in one_line(capsys, text, "-c", config)
    assert "empty.wav: contains no audio" in one_line(capsys, empty, "-c", config)
    assert "no events under detection.events" in one_line(capsys, short_room, "-c", no_events)
    err = one_line(capsys, short_room, "-c", config, "--positive", tmp_path / "gone.wav")
    assert "gone.wav: no such file" in err
    err = one_line(capsys, short_room, "-c", config, "--positive", blip)
    assert "blip.wav: too short to score" in err
    assert "threshold step" in one_line(capsys, short_room, "-c", config, "--step", "0.7")
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", str(short_room), "--per-day", "0"])
    assert exit_.value.code == 2 and "must be positive" in capsys.readouterr().err


def test_help_shows_defaults(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = ("(default: 1.0)", "(default: 0.01)", "(default: 0.05)", "(default: ratio)")
    for default in (*defaults, "$SAT_AUDIO_CONFIG"):
        assert default in text
