"""The live view's server: its files, its state, its event stream, who it answers; the vendored
chart library against the checksums recorded when it was taken from the npm registry."""

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from sat_audio import SAMPLE_RATE
from sat_audio.calibrate import Series, calibrate_series, format_table, yaml_snippet
from sat_audio.config import ConfigError, EventConfig, WebConfig, parse_config
from sat_audio.custom import read_sound
from sat_audio.engine import ChunkResult
from sat_audio.errors import SatAudioError
from sat_audio.labels import all_labels, find
from sat_audio.rules import Detector
from sat_audio.web import view as view_module
from sat_audio.web.view import STATIC, View
from tests.checkpoints import random_model, save_upstream, upstream_name
from tests.waiting import PATIENCE_S

DOG = EventConfig(
    key="dog", name="Dog barking", labels=("Bark",), on_threshold=0.5, off_threshold=0.3
)
LABELS = [lab.name for lab in all_labels()]
BARK = find("Bark").index

# uplot 1.6.32 from registry.npmjs.org (`npm pack uplot@1.6.32`, tarball sha1
# c800a63b432bad692d6d746f44f0882aa73a49ae, as `npm view uplot@1.6.32 dist.shasum` says).
VENDORED = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "uPlot.LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
}


def make_view(
    history_minutes: float = 10.0,
    allow: tuple[str, ...] = (),
    teach_seconds: float = 30.0,
    teach_config: str | None = None,
) -> View:
    cfg = WebConfig(
        enabled=True,
        port=0,
        history_minutes=history_minutes,
        teach_seconds=teach_seconds,
        allow=allow,
    )
    return View(
        cfg,
        listener={"name": "Kitchen", "id": "k", "model": "SAT_T_2s", "min_level_dbfs": -40},
        sources=["mic"],
        events=[DOG],
        labels=LABELS,
        chunk_s=1.0,
        teach_config=teach_config,
    )


def feed(view: View, det: Detector, i: int, bark: float, health: object = None) -> None:
    scores = np.linspace(0, 0.2, 527, dtype=np.float32)
    scores[BARK] = bark
    chunk = ChunkResult("mic", i, float(i), i + 1.0, scores, -20.0)
    det.update(chunk)
    view.chunk(1000.0 + i + 1, chunk, det.rules, health or (lambda: {"sources": []}))


@pytest.fixture
def served() -> Iterator[View]:
    view = make_view()
    view.start()
    yield view
    view.stop()


def get(view: View, path: str, source: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", view.port, timeout=PATIENCE_S, source_address=(source, 0)
    )
    conn.request("GET", path)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def test_history_is_bounded_and_nobody_watching_builds_no_frames() -> None:
    view = make_view(history_minutes=0.1)  # 6 one-second chunks
    det = Detector([DOG], source="mic")

    def health() -> dict:
        raise AssertionError("health built with nobody watching")

    for i in range(20):
        feed(view, det, i, 0.9 if i >= 15 else 0.1, health)
    snap = view.snapshot()
    (src,) = snap["sources"]
    assert src["t"] == [1000.0 + i + 1 for i in range(14, 20)]
    assert src["scores"]["dog"] == [0.1, 0.9, 0.9, 0.9, 0.9, 0.9]
    assert src["top"][0] == ["Bark", 0.9]
    assert len(src["top"]) == 10
    assert [s for _, s in src["top"]] == sorted((s for _, s in src["top"]), reverse=True)
    assert snap["events"] == [
        {
            "key": "dog",
            "name": "Dog barking",
            "kind": "sound",
            "labels": ["Bark"],
            "on": 0.5,
            "off": 0.3,
        }
    ]
    assert snap["history_s"] == 6.0


def test_episodes_start_then_end_in_place() -> None:
    view = make_view()
    view.transition("mic", "dog", "abc", "Bark", 0.8, 1000.0, None)
    view.transition("mic", "dog", "abc", "Bark", 0.95, 1000.0, 1004.5)
    assert view.snapshot()["episodes"] == [
        {
            "id": "abc",
            "source": "mic",
            "event": "dog",
            "label": "Bark",
            "peak": 0.95,
            "start_t": 1000.0,
            "end_t": 1004.5,
        }
    ]


def test_serves_the_page_and_nothing_else(served: View) -> None:
    status, headers, body = get(served, "/")
    assert status == 200 and b'src="app.js"' in body
    assert headers["Content-Type"].startswith("text/html")
    for name in ("app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"):
        status, _, body = get(served, f"/{name}")
        assert status == 200 and body == (STATIC / name).read_bytes()
    for path in ("/../view.py", "/static/app.js", "/uPlot.LICENSE", "/%2e%2e/view.py"):
        assert get(served, path)[0] == 404
    status, headers, body = get(served, "/api/state?x=1")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["name"] == "Kitchen"


def test_page_uses_only_relative_urls() -> None:
    """Under Home Assistant's ingress the page lives at /api/hassio_ingress/<token>/."""
    text = "".join((STATIC / n).read_text() for n in ("index.html", "app.js"))
    for absolute in ('href="/', 'src="/', 'fetch("/', 'EventSource("/', "http://", "https://"):
        assert absolute not in text


def test_allow_list_answers_others_403() -> None:
    """The add-on answers only the Supervisor's ingress proxy; here 127.0.0.2 stands for it."""
    view = make_view(allow=("127.0.0.2",))
    view.start()
    try:
        assert get(view, "/", source="127.0.0.1")[0] == 403
        assert get(view, "/api/events", source="127.0.0.1")[0] == 403
        assert get(view, "/", source="127.0.0.2")[0] == 200
    finally:
        view.stop()
    assert not view.watched


def test_event_stream_sends_each_chunk_and_episode(served: View) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=PATIENCE_S)
    conn.request("GET", "/api/events")
    resp = conn.getresponse()
    assert resp.getheader("Content-Type") == "text/event-stream"
    assert resp.getheader("Content-Length") is None  # a proxy streams it
    assert resp.readline() == b"retry: 2000\n"
    resp.readline()
    end = threading.Event()
    threading.Timer(PATIENCE_S, end.set).start()
    while not served.watched:
        assert not end.is_set()
    det = Detector([DOG], source="mic")
    feed(served, det, 0, 0.9, lambda: {"sources": [{"name": "mic", "state": "ok"}]})
    served.transition("mic", "dog", "abc", "Bark", 0.9, 1000.0, None)

    def message() -> dict:
        line = resp.readline()
        assert line.startswith(b"data: "), line
        assert resp.readline() == b"\n"
        return json.loads(line[6:])

    chunk = message()
    assert chunk["type"] == "chunk" and chunk["source"] == "mic" and chunk["t"] == 1001.0
    assert chunk["top"][0] == ["Bark", 0.9] and chunk["scores"] == {"dog": 0.9}
    assert chunk["states"] == {"dog": "on"}
    assert chunk["health"]["sources"][0]["state"] == "ok"
    episode = message()
    assert episode["type"] == "episode" and episode["end_t"] is None
    served.set_listening(False, {"mic": det.rules})
    assert message()["states"] == {"dog": "paused"}
    conn.close()


def test_calibrate_from_the_page_is_the_command_on_what_was_heard(served: View) -> None:
    """The view keeps each chunk's combined score and hands it to the calibration the command
    runs: the same table and YAML as calibrate_series on that series, split where a pause
    restarted stream time."""
    det = Detector([DOG], source="mic")
    rng = np.random.default_rng(0)
    barks = rng.uniform(0, 0.8, 300)
    for i, bark in enumerate(barks):
        feed(served, det, i % 200, float(bark))  # stream time restarts at chunk 200
    status, _, body = get(served, "/api/calibrate?per_day=24")
    assert status == 200, body
    report = json.loads(body)
    segments = [
        Series(
            start_s=np.arange(n, dtype=float),
            end_s=np.arange(n, dtype=float) + 1,
            level_dbfs=np.full(n, -20.0),
            scores={"dog": barks[a : a + n].astype(np.float32).astype(float)},
        )
        for a, n in ((0, 200), (200, 100))
    ]
    expected = calibrate_series(segments, [DOG], -40, per_day=24)
    assert report["audio_s"] == 300.0
    assert report["table"] == format_table(expected, 24)
    assert report["yaml"] == yaml_snippet(expected)
    assert "dog" in report["yaml"]
    assert get(served, "/api/calibrate?per_day=-1")[0] == 400


def test_calibrate_keeps_the_newest_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_module, "CALIBRATE_CHUNKS", 50)
    view = make_view()
    det = Detector([DOG], source="mic")
    for i in range(120):
        feed(view, det, i, 0.1)
    (segment,) = view._sources["mic"].series.segments()
    assert segment.start_s.tolist() == list(range(70, 120))


def test_calibrate_with_nothing_heard_is_one_line(served: View) -> None:
    status, _, body = get(served, "/api/calibrate")
    assert status == 409 and body.decode().count("\n") == 1


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = WebConfig(enabled=True, port=taken.getsockname()[1])
        view = View(cfg, listener={}, sources=["mic"], events=[], labels=LABELS, chunk_s=1.0)
        with pytest.raises(SatAudioError, match=r"^web: cannot listen on 127\.0\.0\.1:\d+: "):
            view.start()


@pytest.mark.parametrize("name", sorted(VENDORED))
def test_vendored_chart_library_is_the_pinned_release(name: str) -> None:
    digest = hashlib.sha256(Path(STATIC / name).read_bytes()).hexdigest()
    assert digest == VENDORED[name]


def test_web_section_defaults_off_and_local() -> None:
    web = parse_config({}).web
    assert web == WebConfig(enabled=False, host="127.0.0.1", port=8760, history_minutes=10.0)
    given = parse_config({"web": {"enabled": True, "host": "0.0.0.0", "allow": ["172.30.32.2"]}})
    assert given.web.allow == ("172.30.32.2",) and given.web.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ({"allow": ["proxy"]}, "web.allow[0]: expected an IP address"),
        ({"port": 70000}, "web.port: "),
        ({"history_minutes": 0}, "web.history_minutes: "),
        ({"teach_seconds": 3}, "web.teach_seconds: expected 0 (off) or a number from 5 to 120"),
        ({"teach_seconds": 121}, "web.teach_seconds: expected 0 (off) or a number from 5 to 120"),
        ({"teach_seconds": "all"}, "web.teach_seconds: expected 0 (off) or a number from 5"),
        ({"colour": 1}, "web.colour: unknown key 'colour'"),
    ],
)
def test_bad_web_section_is_one_line(web: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"web": web})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_listener_loads_nothing_of_the_view_unless_it_is_on() -> None:
    """web off costs nothing: the view's module and the HTTP server are imported only by
    Listener.run when web.enabled (its thread and history come with them)."""
    code = (
        "import sys, sat_audio.listener, sat_audio.cli; "
        "print(sorted(m for m in ('sat_audio.web.view', 'http.server') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# -- teaching from the last seconds of a source ------------------------------------------------


def post(
    view: View, body: object, headers: dict[str, str] | None = None, source: str = "127.0.0.1"
) -> tuple[int, str]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", view.port, timeout=PATIENCE_S, source_address=(source, 0)
    )
    data = json.dumps(body).encode()
    conn.request("POST", "/api/teach", data, headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, resp.read().decode()
    conn.close()
    return out


def test_the_ring_keeps_exactly_the_last_seconds() -> None:
    """In blocks of any size, as heard: the last N seconds come back sample for sample (int16,
    what the clips keep), fewer when less was heard; nothing is kept without teaching."""
    view = make_view(teach_seconds=5, teach_config="")
    rng = np.random.default_rng(0)
    heard = rng.integers(-32768, 32767, 7 * SAMPLE_RATE + 123).astype(np.int16)
    assert view.last("mic", 5).size == 0
    at = 0
    for size in [1000, 1, 16000, 7] * 100:
        block = heard[at : at + size]
        view.audio("mic", block.astype(np.float32) / 32768)
        at += block.size
        if at == 1000:
            assert np.array_equal(view.last("mic", 5), heard[:1000])
    assert at == heard.size
    assert np.array_equal(view.last("mic", 5), heard[-5 * SAMPLE_RATE :])
    assert np.array_equal(view.last("mic", 2.5), heard[-40000:])
    assert view.ring_bytes("mic") == 5 * SAMPLE_RATE * 2
    view.set_listening(False, {})  # the privacy switch: what was heard is forgotten
    assert view.last("mic", 5).size == 0 and not view._rings["mic"].buffer.any()
    view.set_listening(True, {})
    view.audio("mic", heard[:10].astype(np.float32) / 32768)
    assert np.array_equal(view.last("mic", 5), heard[:10])
    # the default, 30 s, is 960,000 bytes a source; off, or no teaching, none
    assert make_view(teach_config="").ring_bytes("mic") == 960_000
    assert make_view(teach_seconds=0, teach_config="").ring_bytes("mic") == 0
    assert make_view().ring_bytes("mic") == 0
    assert make_view().snapshot()["teach_s"] == 0


def test_teach_takes_json_from_the_page_only() -> None:
    """Another site's page cannot make a browser teach: cross-site requests are 403, a form's
    content types 415 (a JSON one needs a preflight nobody answers); the allow-list holds."""
    view = make_view(allow=("127.0.0.1",), teach_config="")
    view.start()
    try:
        bad = {"source": "mic", "name": "Door Bell", "seconds": 5}
        json_ = {"Content-Type": "application/json"}
        assert post(view, bad, {"Content-Type": "text/plain"})[0] == 415
        assert post(view, bad, {"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
        assert post(view, bad, json_ | {"Sec-Fetch-Site": "cross-site"}) == (
            403,
            "cross-site requests are refused\n",
        )
        assert post(view, bad, json_ | {"Sec-Fetch-Site": "same-site"})[0] == 403
        assert post(view, bad, json_ | {"Origin": "http://evil.example"})[0] == 403
        assert post(view, bad, json_ | {"Origin": "null"})[0] == 403
        assert post(view, bad, source="127.0.0.2")[0] == 403
        # past the checks, the request itself is judged
        same = json_ | {"Origin": f"http://127.0.0.1:{view.port}"}
        status, line = post(view, bad, same)
        assert status == 400 and line.startswith("custom sound name 'Door Bell'")
        status, line = post(view, bad | {"name": "door"}, json_ | {"Sec-Fetch-Site": "same-origin"})
        assert (status, line) == (409, "nothing heard from source mic yet\n")
        assert post(view, bad | {"source": "cam"})[0] == 400
        assert post(view, bad | {"name": "door", "seconds": 31})[1] == (
            "seconds: expected a number above 0, at most 30\n"
        )
        assert post(view, [1])[0] == 400
    finally:
        view.stop()


def test_a_second_teach_while_one_runs_gets_409(monkeypatch: pytest.MonkeyPatch) -> None:
    view = make_view(teach_config="")
    view.audio("mic", np.full(SAMPLE_RATE, 0.1, np.float32))
    started, finish = threading.Event(), threading.Event()

    def slow_child(name: str, clip: str, audio: np.ndarray) -> tuple[int, str]:
        started.set()
        finish.wait(PATIENCE_S)
        return 200, f"taught {name} from {clip}, {audio.size} samples"

    monkeypatch.setattr(view, "_run_teach", slow_child)
    view.start()
    try:
        first: list[tuple[int, str]] = []
        body = {"source": "mic", "name": "door", "seconds": 5}
        thread = threading.Thread(target=lambda: first.append(post(view, body)))
        thread.start()
        assert started.wait(PATIENCE_S)
        assert post(view, body) == (
            409,
            "another sound is being taught: try again when it is done\n",
        )
        finish.set()
        thread.join(PATIENCE_S)
        assert first == [(200, "taught door from mic-last-5s.flac, 16000 samples\n")]
    finally:
        view.stop()


@pytest.mark.slow
def test_teach_from_the_last_seconds_in_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's teach on a real (random-weight) checkpoint: `sat-audio teach` in a child, on
    the effective configuration, writes the sound beside the model; the temporary clip and
    configuration are gone after; silence is the child's one line."""
    save_upstream(random_model("SAT_T_2s", seed=3), tmp_path / upstream_name("SAT_T_2s"))
    config = {"model": {"name": "SAT_T_2s", "dir": str(tmp_path), "chunk_seconds": 1.0}}
    view = make_view(teach_config=yaml.safe_dump(config))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    hiss = 0.003 * np.random.default_rng(1).standard_normal(6 * SAMPLE_RATE)
    hiss[2 * SAMPLE_RATE : 3 * SAMPLE_RATE] += tone
    view.audio("mic", np.zeros(20 * SAMPLE_RATE, np.float32))  # long before: not taught
    view.audio("mic", hiss.astype(np.float32))
    view.start()
    try:
        status, line = post(view, {"source": "mic", "name": "Tone", "seconds": 6})
        assert status == 200, line
        assert line.startswith("taught custom:tone on SAT_T_2s from 1 example(s)")
        assert line.count("\n") == 1
        sound = read_sound(tmp_path / "custom" / "tone.json")
        assert sound.info["examples"] == ["mic-last-6s.flac"]
        assert sound.chunk_seconds == 1.0
        assert list(scratch.iterdir()) == []

        view.audio("mic", np.zeros(10 * SAMPLE_RATE, np.float32))
        status, line = post(view, {"source": "mic", "name": "quiet", "seconds": 10})
        assert status == 422
        assert line.startswith("teach failed (exit 2): sat-audio: error: the examples are silent")
        assert line.count("\n") == 1
        assert not (tmp_path / "custom" / "quiet.json").exists()
        assert list(scratch.iterdir()) == []
    finally:
        view.stop()
