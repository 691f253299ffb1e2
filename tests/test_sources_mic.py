"""Real capture: a private PulseAudio server, ALSA `default` -> pulse, sounddevice records."""

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources import mic
from sat_audio.sources.base import RateLimitedLog
from sat_audio.sources.mic import MicSource
from tests.pulse import PulseServer, Reports
from tests.waiting import PATIENCE_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * PATIENCE_S)]


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[PulseServer]:
    with PulseServer(tmp_path, frequency=440, rate=48000) as server:
        yield server


def _flowing(r: dict) -> bool:
    return r["state"] == "ok" and r["peak_hz"] is not None


def test_records_the_played_sine_at_16k(pulse: PulseServer):
    reports = Reports(pulse.capture("default"))
    r = reports.wait_for("a second of audio", _flowing)
    reports.finish()
    assert r["device_name"] == "default"
    assert r["device_rate"] == 16000  # the ALSA pulse device accepts 16 kHz directly
    assert r["device_channels"] == 1
    assert abs(r["peak_hz"] - 440) <= 2
    # module-sine-source plays amplitude 0.5: a sine's rms is amplitude / sqrt(2)
    assert 0.3 < r["rms"] < 0.4
    assert r["reconnects"] == 0


def test_plugins_of_unused_alsa_devices_are_unloaded(pulse: PulseServer):
    """PortAudio opens every ALSA device to list them; once capturing, only the open one's
    plugin is still mapped (libasound2-plugins brings a52, jack, oss, upmix, ... here)."""
    reports = Reports(pulse.capture("default"))
    r = reports.wait_for("a second of audio", _flowing)
    reports.finish()
    assert "libasound_module_pcm_a52.so" in r["plugins_listed"]
    assert r["plugins_mapped"] == ["libasound_module_pcm_pulse.so"]
    assert abs(r["peak_hz"] - 440) <= 2


def test_native_48k_device_is_resampled(tmp_path: Path):
    """Opened at 48 kHz and resampled: a 6 kHz tone stays at 6 kHz (unresampled it reads 2 kHz)."""
    with PulseServer(tmp_path, frequency=6000, rate=48000) as server:
        reports = Reports(server.capture("default", "--samplerate", "48000"))
        r = reports.wait_for("a second of audio", _flowing)
        reports.finish()
    assert r["device_rate"] == 48000
    assert abs(r["peak_hz"] - 6000) <= 2
    assert 0.3 < r["rms"] < 0.4


def test_channel_pick_opens_enough_channels(pulse: PulseServer):
    reports = Reports(pulse.capture("pulse", "--channel", "1"))
    r = reports.wait_for("a second of audio", _flowing)
    reports.finish()
    assert r["device_name"] == "pulse"
    assert r["device_channels"] == 2
    assert abs(r["peak_hz"] - 440) <= 2


def test_device_by_substring_and_index(pulse: PulseServer):
    listing = subprocess.run(
        [sys.executable, "-m", "sat_audio", "devices"],
        env=pulse.env,
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
    )
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    index = next(row[0] for row in rows if "default" in row)
    reports = Reports(pulse.capture(index))
    r = reports.wait_for("audio from the device by index", _flowing)
    reports.finish()
    assert r["device_name"] == "default"
    reports = Reports(pulse.capture("PULS"))  # unique, case-insensitive substring of "pulse"
    r = reports.wait_for("audio from the device by substring", _flowing)
    reports.finish()
    assert r["device_name"] == "pulse"


def test_devices_command_lists_inputs(pulse: PulseServer):
    done = subprocess.run(
        [sys.executable, "-m", "sat_audio", "devices"],
        env=pulse.env,
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
    )
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["index", "name", "host", "API", "channels", "rate"]
    by_name = {row.split()[1]: row for row in rows}
    assert {"pulse", "default"} <= by_name.keys()
    assert "ALSA" in by_name["default"]
    assert by_name["default"].rstrip().endswith("(default)")


def test_missing_device_is_one_line_listing_devices(pulse: PulseServer):
    proc = pulse.capture("no such microphone")
    out, _ = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 2
    line = out.strip()
    assert "\n" not in line
    assert "no input device matches 'no such microphone'" in line
    assert "available input devices:" in line
    assert "'default'" in line and "'pulse'" in line


def test_server_loss_reconnects_and_audio_flows_again(pulse: PulseServer):
    reports = Reports(pulse.capture("default"))
    reports.wait_for("audio before the loss", _flowing)
    pulse.kill()
    lost = reports.wait_for("reconnecting", lambda r: r["state"] == "reconnecting")
    assert lost["error"] == "the audio stream stopped (device lost)"
    time.sleep(1.0)  # the server stays down for a while: reopening fails and backs off
    pulse.start()
    back = reports.wait_for(
        "audio after the restart",
        lambda r: r["state"] == "ok" and r["reconnects"] == 1,
    )
    after = reports.wait_for(
        "a full second of new audio",
        lambda r: r["samples"] >= back["samples"] + 16000 and r["state"] == "ok",
    )
    reports.finish()
    assert abs(after["peak_hz"] - 440) <= 2
    assert after["reconnects"] == 1


def test_silent_device_is_reopened(pulse: PulseServer):
    """A device that stops delivering (suspended source) trips the stall watchdog."""
    reports = Reports(pulse.capture("default"))
    reports.wait_for("audio before the stall", _flowing)
    pulse.pactl("suspend-source", "sine", "1")
    stalled = reports.wait_for("reconnecting", lambda r: r["state"] == "reconnecting")
    assert "no audio from the device" in stalled["error"]
    pulse.pactl("suspend-source", "sine", "0")
    back = reports.wait_for("audio again", lambda r: r["state"] == "ok")
    reports.finish()
    assert back["reconnects"] == 1


class _FixedRateDevice:
    """PortAudio's answer for a USB microphone that only runs at 48 kHz stereo (unit test)."""

    class PortAudioError(Exception):
        pass

    def check_input_settings(self, device: int, channels: int, dtype: str, samplerate: int):
        if samplerate != 48000 or channels != 2:
            raise self.PortAudioError("Invalid sample rate [PaErrorCode -9997]")


def test_settings_fall_back_to_the_native_rate(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mic, "_sounddevice", _FixedRateDevice)
    usb = mic.InputDevice(3, "USB Audio", "ALSA", 2, 48000.0, True)
    assert MicSource(SourceConfig(name="m", kind="mic"))._settings(usb) == (48000, 2)
    forced = MicSource(SourceConfig(name="m", kind="mic", samplerate=16000))
    with pytest.raises(SatAudioError, match="'USB Audio' cannot capture at 16000 Hz"):
        forced._settings(usb)
    with pytest.raises(SatAudioError, match="channel 2 does not exist; 'USB Audio' has 2"):
        MicSource(SourceConfig(name="m", kind="mic", channel=2))._settings(usb)


def test_find_device_rules():
    devices = [
        mic.InputDevice(0, "pulse", "ALSA", 32, 44100.0, False),
        mic.InputDevice(4, "USB Mic: Audio (hw:1,0)", "ALSA", 1, 48000.0, False),
        mic.InputDevice(5, "USB Mic: Audio (hw:2,0)", "ALSA", 1, 48000.0, True),
    ]
    assert mic.find_device(None, devices).index == 5
    assert mic.find_device(4, devices).index == 4
    assert mic.find_device("4", devices).index == 4
    assert mic.find_device("hw:2", devices).index == 5
    with pytest.raises(SatAudioError, match="ambiguous"):
        mic.find_device("usb mic", devices)
    with pytest.raises(SatAudioError, match="no input device with index 7; available input"):
        mic.find_device(7, devices)
    with pytest.raises(SatAudioError, match="no default input device"):
        mic.find_device(None, devices[:2])


def test_overflow_log_is_rate_limited(caplog: pytest.LogCaptureFixture):
    limited = RateLimitedLog(interval_s=60)
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            limited("source %s: input overflow", "m")
    assert [r.getMessage() for r in caplog.records] == [
        "source m: input overflow (1 since last report)"
    ]
