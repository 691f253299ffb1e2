from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.broker import Broker, Certs, make_certs
from tests.checkpoints import random_model, save_upstream, upstream_name

LARGER_VARIANTS = ("SAT_S", "SAT_B", "audiotransformer_base")
"""Models 4 to 30 times SAT_T's work: the fast tier checks the same code on SAT_T alone."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in item.name for name in LARGER_VARIANTS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The default model folder is the user's cache: the tests, and the listeners they start,
    keep theirs in a folder of their own instead."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        patch.delenv("SAT_AUDIO_MODEL_DIR", raising=False)
        yield


@pytest.fixture(scope="session")
def sat_t_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random SAT_T_2s checkpoint saved under its upstream file name."""
    folder = tmp_path_factory.mktemp("ckpt")
    return save_upstream(random_model("SAT_T_2s", seed=1), folder / upstream_name("SAT_T_2s"))


@pytest.fixture
def noise_wav(tmp_path: Path) -> Path:
    """5.5 s of 44.1 kHz stereo noise and tone: downmix, resampling and a short last chunk."""
    rate = 44100
    t = np.arange(int(5.5 * rate)) / rate
    rng = np.random.default_rng(3)
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.1 * rng.standard_normal(t.size)
    path = tmp_path / "noise.wav"
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture
def broker(tmp_path: Path):
    """A real mosquitto on a free 127.0.0.1 port, anonymous access, stopped after the test."""
    server = Broker(tmp_path / "broker")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mqtt_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    return make_certs(tmp_path_factory.mktemp("certs"))
