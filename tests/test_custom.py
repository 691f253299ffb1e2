"""Custom sounds: the file (versioned, checked, refused from a future version or another
variant), the label custom:NAME in the configuration, the rules and the add-on options, and
`sat-audio teach` then `detect` and `run` (over MQTT, across a restart) on a real checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from sat_audio import addon
from sat_audio.addon import split_labels
from sat_audio.cli import main
from sat_audio.config import ConfigError, EventConfig, parse_config
from sat_audio.custom import (
    FORMAT,
    CustomSound,
    custom_labels,
    fit_probe,
    load_sounds,
    read_sound,
    sound_path,
    teaching_set,
)
from sat_audio.engine import ChunkResult
from sat_audio.errors import SatAudioError
from sat_audio.labels import canonical, custom_name, label_index
from sat_audio.model.registry import get_spec
from sat_audio.rules import Detector
from tests.broker import Broker, Subscriber
from tests.checkpoints import random_model, save_upstream, upstream_name
from tests.test_listener import Run, file_source, mqtt_section

RATE = 16000
ID = "custom_e2e"
BASE = f"sat_audio/{ID}"


def a_sound(name: str = "door", variant: str = "SAT_T_2s", dim: int = 192) -> CustomSound:
    rng = np.random.default_rng(0)
    return CustomSound(
        name=name,
        variant=variant,
        chunk_seconds=1.0,
        mean=rng.standard_normal(dim),
        scale=1.0 + rng.random(dim),
        weights=rng.standard_normal(dim),
        bias=-1.5,
        info={"examples": ["a.wav"]},
    )


def test_a_custom_sound_file_is_versioned_json_and_reads_back(tmp_path: Path) -> None:
    sound = a_sound()
    path = sound.save(sound_path("door", tmp_path))
    assert path == tmp_path / "custom" / "door.json"
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["variant"] == "SAT_T_2s" and data["name"] == "door"
    back = read_sound(path)
    embeddings = np.random.default_rng(1).standard_normal((4, 192))
    np.testing.assert_allclose(back.probability(embeddings), sound.probability(embeddings))
    assert back.info == {"examples": ["a.wav"]}


def test_a_file_from_a_future_version_is_refused_in_one_line(tmp_path: Path) -> None:
    path = a_sound().save(tmp_path / "door.json")
    data = json.loads(path.read_text())
    data["format"] = FORMAT + 1
    data["probe"] = {"something": "new"}
    path.write_text(json.dumps(data))
    with pytest.raises(SatAudioError) as err:
        read_sound(path)
    assert f"custom sound format {FORMAT + 1}, from a newer sat-audio" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("kind"), "not a custom sound file"),
        (lambda d: d.update(format="1"), "not a custom sound file"),
        (lambda d: d["probe"].pop("bias"), "not a complete custom sound file"),
        (lambda d: d["probe"].update(weights=[1.0, 2.0]), "damaged"),
        (lambda d: d["probe"].update(scale=[0.0] * 192), "damaged"),
        (lambda d: d.update(name="../../etc"), "custom sound name"),
    ],
)
def test_a_bad_file_is_one_clear_line(tmp_path: Path, change, message: str) -> None:
    path = a_sound().save(tmp_path / "door.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(SatAudioError, match=message):
        read_sound(path)
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle is not read as anything but text
    with pytest.raises(SatAudioError, match="not a custom sound file"):
        read_sound(path)


def test_a_sound_of_another_variant_or_none_is_one_clear_error(tmp_path: Path) -> None:
    a_sound("door", variant="SAT_S_2s", dim=384).save(sound_path("door", tmp_path))
    with pytest.raises(SatAudioError, match=r"custom:door was taught on model SAT_S_2s, this "):
        load_sounds(["custom:door"], get_spec("SAT_T_2s"), 1.0, str(tmp_path))
    with pytest.raises(SatAudioError, match=r"custom:bell: no custom sound .*sat-audio teach bell"):
        load_sounds(["custom:bell"], get_spec("SAT_T_2s"), 1.0, str(tmp_path))
    assert [s.name for s in load_sounds(["custom:door"], get_spec("SAT_S_2s"), 1.0, str(tmp_path))]


def test_names_and_labels() -> None:
    assert custom_name("custom:Door_Bell") == "door_bell" == custom_name("door_bell")
    assert canonical(" Custom:Kettle ") == "custom:kettle"
    assert canonical("bark") == "Bark"
    for bad in ("custom:", "custom:a b", "custom:_x", "custom:" + "x" * 41, "custom:../x"):
        with pytest.raises(SatAudioError, match="custom sound name"):
            canonical(bad)
    assert custom_labels([("Bark", "custom:b"), ("custom:a", "custom:b"), ()]) == (
        "custom:a",
        "custom:b",
    )
    assert label_index("custom:b", ("custom:a", "custom:b")) == 528
    assert label_index("Bark", ("custom:a",)) == label_index("Bark") < 527


def test_the_configuration_and_the_addon_options_take_custom_labels() -> None:
    events = {"door": {"labels": ["custom:Door", "Doorbell"], "on_threshold": 0.6}}
    config = parse_config({"detection": {"events": events}})
    assert config.detection.events[0].labels == ("custom:door", "Doorbell")
    with pytest.raises(ConfigError, match=r"labels.*custom sound name 'a b'") as err:
        parse_config(
            {"detection": {"events": {"x": {"labels": ["custom:a b"], "on_threshold": 1}}}}
        )
    assert "\n" not in str(err.value)
    assert split_labels("custom:kettle, Water tap, faucet") == [
        "custom:kettle",
        "Water tap, faucet",
    ]


def test_the_addon_options_labels_text_takes_custom_labels(tmp_path: Path) -> None:
    """The add-on's model folder is its data folder's, where its custom sounds are looked for."""
    manifest = yaml.safe_load((Path(__file__).parents[1] / "addon" / "config.yaml").read_text())
    options = manifest["options"]
    options["events"][0]["labels"] = "custom:Kettle, Water tap, faucet"
    config = addon.to_config(addon.options_dict(options, tmp_path))
    assert config.detection.events[0].labels == ("custom:kettle", "Water tap, faucet")
    assert sound_path("kettle", config.model.dir) == tmp_path / "models/custom/kettle.json"
    options["events"][0]["labels"] = "custom:tea pot"
    with pytest.raises(ConfigError, match=r"\(glass_breaking\)\.labels': custom sound name 'tea"):
        addon.to_config(addon.options_dict(options, tmp_path))


def test_rules_read_a_custom_labels_column() -> None:
    """The custom columns follow AudioSet's 527 in the sorted order of the events' custom labels,
    as the listener loads them."""
    events = [
        EventConfig("bell", "Bell", ("custom:zz",), 0.5, 0.3, hold_s=0.0),
        EventConfig("kettle", "Kettle", ("Bark", "custom:aa"), 0.5, 0.3, hold_s=0.0),
    ]
    detector = Detector(events, source="s")
    scores = np.zeros((3, 529), np.float32)
    scores[1, 528] = 0.9  # custom:zz, the second custom column
    scores[2, 527] = 0.8  # custom:aa
    found = []
    for i, row in enumerate(scores):
        chunk = ChunkResult("s", i, float(i), float(i + 1), row, -20.0)
        found += [(t.event, t.type, t.label) for t in detector.update(chunk)]
    assert found == [
        ("bell", "start", "custom:zz"),
        ("bell", "end", "custom:zz"),
        ("kettle", "start", "custom:aa"),
    ]


def test_the_probe_separates_what_is_separable() -> None:
    rng = np.random.default_rng(0)
    shift = 3.0 * (np.arange(64) < 3)
    pos = rng.standard_normal((12, 64)) + shift
    neg = rng.standard_normal((200, 64))
    mean, scale, w, b = fit_probe(pos, neg)
    z = lambda x: 1 / (1 + np.exp(-(((x - mean) / scale) @ w + b)))  # noqa: E731
    held_pos = rng.standard_normal((200, 64)) + shift
    held_neg = rng.standard_normal((200, 64))
    assert (z(held_pos) > 0.5).mean() > 0.8 and (z(held_neg) > 0.5).mean() < 0.1
    assert np.isfinite(w).all() and np.abs(w).max() < 50  # separable, yet finite


# -- end to end: a real checkpoint, the command line, the listener over MQTT --------------------


def tone(seconds: float, freq: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def hiss(seconds: float, seed: int, level: float = 0.003) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(
        np.float32
    )


def scene(seed: int, sound: np.ndarray, at_s: float, seconds: float = 12.0) -> np.ndarray:
    wave = hiss(seconds, seed)
    wave[int(at_s * RATE) : int(at_s * RATE) + sound.size] += sound
    return wave


@pytest.fixture(scope="module")
def taught(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with a random SAT_T_2s and a config on it (onnx, 1 s chunks), where
    `sat-audio teach tone` has learned a 440 Hz tone from three clips against a hiss."""
    folder = tmp_path_factory.mktemp("custom")
    save_upstream(random_model("SAT_T_2s", seed=3), folder / upstream_name("SAT_T_2s"))
    clips = []
    for i in range(3):
        clips.append(folder / f"tone{i}.wav")
        sf.write(clips[-1], tone(1.0 + 0.3 * i, 440 * (1 + 0.01 * i)), RATE)
    sf.write(folder / "room.wav", hiss(20.0, 1), RATE)
    config = folder / "config.yaml"
    events = {"tone": {"labels": ["custom:tone"], "on_threshold": 0.5, "off_threshold": 0.3}}
    write(config, folder, events)
    code = main(["teach", "tone", *map(str, clips), "--background", str(folder / "room.wav"),
                 "-c", str(config)])  # fmt: skip
    assert code == 0
    return config


def write(config: Path, folder: Path, events: dict, **extra: object) -> None:
    data = {
        "listener": {"id": ID, "name": "Custom"},
        "model": {"name": "SAT_T_2s", "dir": str(folder), "chunk_seconds": 1.0},
        "detection": {"events": events},
        **extra,
    }
    config.write_text(yaml.safe_dump(data))


@pytest.mark.slow
def test_a_saved_clips_room_before_and_after_is_not_taught_as_the_sound() -> None:
    """A clip as the listener saves one: seconds of the room around the sound. Only the chunks
    that hold the sound are examples (16 renderings, one or two chunks each); the room's, 17 dB
    below the tone, would otherwise pass the 20 dB range too."""
    from sat_audio.model.fast import TorchScorer

    room = hiss(4.0, 3, level=0.03)
    clip = np.concatenate((room, tone(1.0), hiss(4.0, 4, level=0.03)))
    scorer = TorchScorer(random_model("SAT_T_1s", seed=1))
    positive, _ = teaching_set(scorer, [clip], [], 1.0)
    assert 16 <= len(positive) <= 32
    steady, _ = teaching_set(scorer, [hiss(3.0, 5, level=0.1)], [], 1.0)
    assert len(steady) >= 16 * 3  # a steady sound: every chunk is the sound


@pytest.mark.slow
def test_teach_writes_the_sound_beside_the_model(taught: Path, capsys) -> None:
    path = taught.parent / "custom" / "tone.json"
    sound = read_sound(path)
    assert sound.variant == "SAT_T_2s" and sound.chunk_seconds == 1.0
    assert sound.info["examples"] == ["tone0.wav", "tone1.wav", "tone2.wav"]
    assert sound.info["background"] == ["room.wav"]


@pytest.mark.slow
def test_detect_finds_a_taught_sound_and_not_another(taught: Path, tmp_path: Path, capsys) -> None:
    sf.write(tmp_path / "scene.wav", scene(5, tone(1.0), 4.0), RATE)
    sf.write(tmp_path / "other.wav", scene(6, hiss(1.0, 7, 0.1), 4.0), RATE)
    capsys.readouterr()
    assert main(["detect", "--json", "-c", str(taught), str(tmp_path / "scene.wav"),
                 str(tmp_path / "other.wav")]) == 0  # fmt: skip
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    starts = [
        (Path(t["file"]).name, t["label"], t["start_s"]) for t in found if t["type"] == "start"
    ]
    assert starts == [("scene.wav", "custom:tone", 4.0)]


@pytest.mark.slow
def test_teaching_from_silence_short_clips_and_other_rates(
    taught: Path, tmp_path: Path, capsys
) -> None:
    """Silence is one clear line; a clip shorter than a chunk, or at 44.1 kHz, is taught."""
    sf.write(tmp_path / "silence.wav", np.zeros(RATE, np.float32), RATE)
    capsys.readouterr()
    assert main(["teach", "quiet", str(tmp_path / "silence.wav"), "-c", str(taught)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sat-audio: error: the examples are silent") and err.count("\n") == 1
    assert not (taught.parent / "custom" / "quiet.json").exists()

    sf.write(tmp_path / "blip.wav", tone(0.2, 880), RATE)  # a fifth of a chunk
    t = np.arange(int(1.2 * 44100)) / 44100
    sf.write(tmp_path / "cd.wav", (0.3 * np.sin(2 * np.pi * 880 * t)).astype(np.float32), 44100)
    assert main(["teach", "blip", str(tmp_path / "blip.wav"), str(tmp_path / "cd.wav"),
                 "-c", str(taught)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "taught custom:blip on SAT_T_2s from 2 example(s)" in out
    assert read_sound(taught.parent / "custom" / "blip.json").info["examples"] == [
        "blip.wav",
        "cd.wav",
    ]


@pytest.mark.slow
def test_teach_records_from_a_configured_source(taught: Path, tmp_path: Path, capsys) -> None:
    sf.write(tmp_path / "live.wav", scene(8, tone(1.0), 0.5, seconds=3.0), RATE)
    config = tmp_path / "config.yaml"
    data = yaml.safe_load(taught.read_text())
    data["sources"] = [file_source(tmp_path / "live.wav", realtime=False, name="kitchen")]
    config.write_text(yaml.safe_dump(data))
    assert main(["teach", "recorded", "--record", "2", "-c", str(config)]) == 0
    assert "recording 2 s from source kitchen" in capsys.readouterr().err
    sound = read_sound(taught.parent / "custom" / "recorded.json")
    assert sound.info["examples"] == ["kitchen (recorded)"]
    assert main(["teach", "long", "--record", "10", "-c", str(config)]) == 2
    assert "source kitchen gave 3.0 s of audio, not the 10 s asked for" in capsys.readouterr().err


@pytest.mark.slow
def test_listener_publishes_custom_events_over_mqtt_and_after_a_restart(
    taught: Path, tmp_path: Path, broker: Broker
) -> None:
    """sat-audio run loads the taught sound, its events go out over MQTT like any other; a
    second run (a restart) loads it again from the model folder. The second reads the file in
    real time, so every chunk's top labels are published: the custom label among them."""
    wav = tmp_path / "scene.wav"
    sf.write(wav, scene(5, tone(1.0), 4.0, seconds=8.0), RATE)
    config = tmp_path / "config.yaml"
    data = yaml.safe_load(taught.read_text())
    data["mqtt"] = mqtt_section(broker)
    data["publishing"] = {"scores": True, "top_k": 3, "rate_hz": 50}
    sub = Subscriber(broker, (f"{BASE}/#",)).start()
    try:
        for run_number in (1, 2):
            data["sources"] = [file_source(wav, realtime=run_number == 2)]
            config.write_text(yaml.safe_dump(data))
            run = _run(tmp_path, config, run_number)
            try:
                assert run.wait() == 0, run.stderr()
            finally:
                run.stop()
            sub.wait_for(lambda n=run_number: len(starts(sub)) >= n, f"start {run_number}")
            found = [(s["label"], s["event"]) for s in starts(sub)]
            assert found == [("custom:tone", "tone")] * run_number
        tops = [[t["label"] for t in m.json()["top"]] for m in sub.on(f"{BASE}/scores")]
        assert sum("custom:tone" in top for top in tops) >= 1, tops
    finally:
        sub.stop()


def starts(sub: Subscriber) -> list[dict]:
    return [m.json() for m in sub.on(f"{BASE}/event/tone") if m.json()["type"] == "start"]


def _run(tmp_path: Path, config: Path, number: int) -> Run:
    folder = tmp_path / f"run{number}"
    folder.mkdir()
    return Run(folder, config)


@pytest.mark.slow
def test_a_listener_on_another_variant_refuses_the_sound_in_one_line(
    taught: Path, tmp_path: Path
) -> None:
    save_upstream(random_model("SAT_T_1s", seed=1), taught.parent / upstream_name("SAT_T_1s"))
    config = tmp_path / "config.yaml"
    data = yaml.safe_load(taught.read_text())
    data["model"]["name"] = "SAT_T_1s"
    data["sources"] = [file_source(taught.parent / "room.wav", realtime=False)]
    config.write_text(yaml.safe_dump(data))
    run = Run(tmp_path, config)
    try:
        assert run.wait() == 2
    finally:
        run.stop()
    lines = [line for line in run.stderr().splitlines() if "error" in line]
    assert lines == [
        "sat-audio: error: custom:tone was taught on model SAT_T_2s, this listener runs "
        "SAT_T_1s: teach it again with `sat-audio teach tone CLIP...` on this model"
    ]
