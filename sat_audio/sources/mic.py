"""A microphone through PortAudio (sounddevice): 16 kHz mono when the device can, else its native
rate resampled in streaming mode; a lost device is reopened with capped backoff.

PortAudio's callback only copies audio into a small hand-off queue; this source's thread
downmixes, resamples, and watches the flow: no audio for STALL_S means the device is gone (an
unplugged USB microphone, a PulseAudio server that died), so the stream is closed and reopened.
"""

import ctypes
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import soxr

from sat_audio import SAMPLE_RATE
from sat_audio.audio import to_mono
from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources.base import Backoff, RateLimitedLog, Source

log = logging.getLogger(__name__)

STALL_S = 5.0
"""No audio for this long means the device is lost (PulseAudio delivers in bursts of up to 2 s)."""
POLL_S = 0.2
HANDOFF_BLOCKS = 100
"""Bound of the callback -> thread queue; the thread only resamples, so it rarely holds more."""

_portaudio_lock = threading.Lock()
"""Held to re-initialise PortAudio, and to open a stream and free ALSA's configuration after it."""
_open_streams = 0
"""PortAudio's device list is fixed at initialisation; re-initialising it (to see a device that
came back) closes every stream, so it is done only while no stream is open in this process."""


def _release_alsa_plugins() -> None:
    """Unload the ALSA plugins that PortAudio loaded to list devices and no open stream uses.

    PortAudio's initialisation opens every PCM the ALSA configuration defines, and ALSA keeps
    each plugin's library, with everything it links (the a52 encoder's brings libavcodec; 73
    libraries on a Debian host), until its global configuration is freed. Freed once a stream
    is open, the libraries of the plugins in use stay and the rest are unmapped; ALSA reads its
    configuration again at the next open. Without libasound in the process (PortAudio on another
    system) nothing happens.
    """
    try:
        asound = ctypes.CDLL("libasound.so.2", mode=getattr(os, "RTLD_NOLOAD", 0))
    except OSError:
        return
    asound.snd_config_update_free_global()


def _sounddevice() -> ModuleType:
    """Import sounddevice lazily: only microphone users need the PortAudio library."""
    try:
        import sounddevice
    except OSError as err:
        raise SatAudioError(f"PortAudio is not available (install libportaudio2): {err}") from None
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: float
    is_default: bool


def input_devices() -> list[InputDevice]:
    """Every device PortAudio can capture from, in PortAudio's order."""
    sd = _sounddevice()
    apis = sd.query_hostapis()
    try:
        default_in = sd.query_devices(kind="input")["index"]
    except sd.PortAudioError:  # no default input device
        default_in = -1
    return [
        InputDevice(
            index=d["index"],
            name=d["name"],
            hostapi=apis[d["hostapi"]]["name"],
            channels=d["max_input_channels"],
            default_rate=d["default_samplerate"],
            is_default=d["index"] == default_in,
        )
        for d in sd.query_devices()
        if d["max_input_channels"] > 0
    ]


def _available(devices: list[InputDevice]) -> str:
    listed = ", ".join(f"{d.index} {d.name!r}" for d in devices)
    return f"available input devices: {listed}" if devices else "no input devices are available"


def find_device(spec: str | int | None, devices: list[InputDevice]) -> InputDevice:
    """Device by index, exact name, unique name substring (any case), or the default (None)."""
    if spec is None:
        for d in devices:
            if d.is_default:
                return d
        raise SatAudioError(f"no default input device; {_available(devices)}")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        for d in devices:
            if d.index == int(spec):
                return d
        raise SatAudioError(f"no input device with index {spec}; {_available(devices)}")
    for d in devices:
        if d.name == spec:
            return d
    matches = [d for d in devices if spec.lower() in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(repr(d.name) for d in matches)
        raise SatAudioError(f"input device {spec!r} is ambiguous, it matches {names}")
    raise SatAudioError(f"no input device matches {spec!r}; {_available(devices)}")


class MicSource(Source):
    """Captures from one PortAudio input device."""

    kind = "mic"

    def __init__(self, cfg: SourceConfig) -> None:
        super().__init__(cfg)
        self.device: InputDevice | None = None
        self.device_rate = 0
        """The rate the device was opened at (16000 when it could, else its native rate)."""
        self.device_channels = 0
        self.backoff = Backoff()
        self._stream: Any = None
        self._handoff: queue.Queue[tuple[np.ndarray, bool]] = queue.Queue(HANDOFF_BLOCKS)
        self._handoff_full = 0
        """Callback blocks lost because the hand-off queue was full (only the callback writes)."""
        self._handoff_counted = 0
        self._died = threading.Event()
        """Set by PortAudio when the stream stops on its own (the device went away)."""
        self._resampler: soxr.ResampleStream | None = None
        self._overflow_log = RateLimitedLog()

    # -- opening ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.device = find_device(self.cfg.device, input_devices())
        self._open(self.device)

    def _settings(self, device: InputDevice) -> tuple[int, int]:
        """The first (rate, channels) the device accepts: 16 kHz mono preferred."""
        sd = _sounddevice()
        cfg = self.cfg
        if cfg.channel is not None and cfg.channel >= device.channels:
            raise SatAudioError(
                f"source {self.name}: channel {cfg.channel} does not exist; "
                f"{device.name!r} has {device.channels}"
            )
        rates = [cfg.samplerate] if cfg.samplerate else [SAMPLE_RATE, round(device.default_rate)]
        fewest = 1 if cfg.channel is None else cfg.channel + 1
        channels = sorted(
            {c for c in (fewest, 2, device.channels) if fewest <= c <= device.channels}
        )
        error: Exception | None = None
        for rate in dict.fromkeys(rates):
            for ch in channels:
                try:
                    sd.check_input_settings(
                        device=device.index, channels=ch, dtype="float32", samplerate=rate
                    )
                except (sd.PortAudioError, ValueError) as err:
                    error = err
                    continue
                return rate, ch
        raise SatAudioError(
            f"source {self.name}: {device.name!r} cannot capture at "
            f"{' or '.join(map(str, dict.fromkeys(rates)))} Hz ({error})"
        )

    def _open(self, device: InputDevice) -> None:
        global _open_streams
        sd = _sounddevice()
        self._died.clear()
        with _portaudio_lock:  # no source frees ALSA's configuration while another opens
            rate, channels = self._settings(device)
            try:
                stream = sd.InputStream(
                    device=device.index,
                    samplerate=rate,
                    channels=channels,
                    dtype="float32",
                    blocksize=max(1, round(rate * self.cfg.block_seconds)),
                    latency="high",
                    callback=self._callback,
                    finished_callback=self._died.set,
                )
                stream.start()
            except sd.PortAudioError as err:
                raise SatAudioError(
                    f"source {self.name}: cannot open {device.name!r}: {err}"
                ) from None
            _open_streams += 1
            _release_alsa_plugins()
        self._stream = stream
        self.device, self.device_rate, self.device_channels = device, rate, channels
        self._resampler = (
            soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
            if rate != SAMPLE_RATE
            else None
        )
        log.info(
            "source %s: %r (%s) at %d Hz, %d channel(s)",
            self.name,
            device.name,
            device.hostapi,
            rate,
            channels,
        )

    def _close(self) -> None:
        global _open_streams
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except Exception as err:  # a stream on a vanished device may fail to close cleanly
            log.debug("source %s: closing the stream: %s", self.name, err)
        with _portaudio_lock:
            _open_streams -= 1
        while not self._handoff.empty():  # audio of the old stream, maybe at another rate
            self._handoff.get_nowait()

    def _reopen(self) -> None:
        """Find the device again (re-initialising PortAudio when possible) and open it."""
        sd = _sounddevice()
        with _portaudio_lock:
            if _open_streams == 0:
                # sounddevice's documented way to refresh PortAudio's device list
                try:
                    sd._terminate()
                    sd._initialize()
                except sd.PortAudioError as err:
                    raise SatAudioError(f"PortAudio failed to restart: {err}") from None
        devices = input_devices()
        assert self.device is not None
        try:
            device = find_device(self.device.name, devices)
        except SatAudioError:
            device = find_device(self.cfg.device, devices)
        self._open(device)

    # -- capture ----------------------------------------------------------------------------

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        try:
            self._handoff.put_nowait((indata.copy(), bool(status.input_overflow)))
        except queue.Full:
            self._handoff_full += 1

    def _run(self) -> None:
        last_audio = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    frames, overflow = self._handoff.get(timeout=POLL_S)
                except queue.Empty:
                    if self._died.is_set():
                        self._reconnect("the audio stream stopped (device lost)")
                    elif time.monotonic() - last_audio > STALL_S:
                        self._reconnect(f"no audio from the device for {STALL_S:.0f} s")
                    else:
                        continue
                    last_audio = time.monotonic()
                    continue
                last_audio = time.monotonic()
                if self.status().state != "ok":
                    self._set_state("ok")
                    self.backoff.reset()
                full = self._handoff_full
                lost, self._handoff_counted = full - self._handoff_counted, full
                if overflow or lost:
                    self._count_overflow(int(overflow) + lost)
                    self._overflow_log("source %s: input overflow, audio lost", self.name)
                mono = to_mono(frames, self.cfg.channel)
                if self._resampler is not None:
                    mono = self._resampler.resample_chunk(mono)
                self._emit(mono)
        finally:
            self._close()

    def _reconnect(self, reason: str) -> None:
        """Close the stream and reopen the device with backoff until it opens (or stop)."""
        self._close()
        self._set_state("reconnecting", reason)
        while not self._stop.is_set():
            delay = self.backoff.next()
            log.info("source %s: reopening the device in %.1f s", self.name, delay)
            if self._stop.wait(delay):
                return
            try:
                self._reopen()
            except SatAudioError as err:
                self._set_state("reconnecting", str(err))
                continue
            return
