"""Checkpoint loading, downloading and every way a checkpoint can be wrong."""

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sat_audio.errors import SatAudioError
from sat_audio.model.checkpoint import download, load_model
from tests.checkpoints import random_model, save_upstream, upstream_name

WAVE = torch.randn(1, 32000, generator=torch.Generator().manual_seed(0)) * 0.2


def scores_of(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(WAVE, model.silence_memory(1))[0]


@pytest.mark.parametrize("variant", ["SAT_T_2s", "SAT_S_1s", "audiotransformer_tiny"])
@pytest.mark.parametrize("under_model", [True, False])
def test_upstream_format_reproduces_model_exactly(
    tmp_path: Path, variant: str, under_model: bool
) -> None:
    original = random_model(variant, seed=7)
    path = save_upstream(original, tmp_path / upstream_name(variant), under_model=under_model)
    loaded = load_model(str(path))
    assert loaded.spec.name == variant
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(scores_of(loaded), scores_of(original))


def test_any_file_name_with_variant(tmp_path: Path) -> None:
    path = save_upstream(random_model("SAT_T_1s"), tmp_path / "mine.pt")
    assert load_model(str(path), variant="SAT_T_1s").spec.name == "SAT_T_1s"
    with pytest.raises(SatAudioError, match=r"cannot tell the architecture of mine.pt"):
        load_model(str(path))


def test_registry_name_loads_from_model_dir(tmp_path: Path) -> None:
    save_upstream(random_model("SAT_T_2s"), tmp_path / upstream_name("SAT_T_2s"))
    assert load_model("SAT_T_2s", directory=tmp_path).spec.name == "SAT_T_2s"


def test_model_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_upstream(random_model("SAT_T_2s"), tmp_path / upstream_name("SAT_T_2s"))
    monkeypatch.setenv("SAT_AUDIO_MODEL_DIR", str(tmp_path))
    assert load_model("SAT_T_2s", allow_download=False).spec.name == "SAT_T_2s"


def test_offline_error_names_url_and_destination(tmp_path: Path) -> None:
    with pytest.raises(SatAudioError) as err:
        load_model("SAT_T_2s", directory=tmp_path, allow_download=False)
    message = str(err.value)
    assert "zenodo.org/record/7964975/files/SAT_T_stream2s_mAP_43_34.pt" in message
    assert str(tmp_path / "SAT_T_stream2s_mAP_43_34.pt") in message
    assert "\n" not in message


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / upstream_name("SAT_T_2s")
    path.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(SatAudioError, match=r"is not a readable torch checkpoint"):
        load_model(str(path))


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = save_upstream(random_model("SAT_T_2s"), tmp_path / upstream_name("SAT_T_2s"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SatAudioError, match=r"is not a readable torch checkpoint"):
        load_model(str(path))


class Evil:
    """weights_only loading must refuse arbitrary pickled objects."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save({"model": Evil()}, path)
    with pytest.raises(SatAudioError, match=r"is not a readable torch checkpoint"):
        load_model(str(path))


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save([1, 2, 3], path)
    with pytest.raises(SatAudioError, match=r"holds no state dict of tensors"):
        load_model(str(path))


def test_wrong_shapes_name_the_keys(tmp_path: Path) -> None:
    path = save_upstream(random_model("SAT_S_2s"), tmp_path / upstream_name("SAT_T_2s"))
    with pytest.raises(SatAudioError, match=r"is not a SAT_T_2s checkpoint: unexpected cls_token"):
        load_model(str(path))
    state = random_model("SAT_T_1s").state_dict()
    torch.save(state, path)
    with pytest.raises(
        SatAudioError,
        match=r"does not fit SAT_T_2s: shape of time_pos_embed "
        r"\(1, 192, 1, 12\) \(model \(1, 192, 1, 24\)\)",
    ):
        load_model(str(path))


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = random_model("SAT_T_2s").state_dict()
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save({k: v for k, v in state.items() if not k.startswith("blocks.3.mlp")}, path)
    with pytest.raises(SatAudioError, match=r"missing blocks\.3\.mlp\.fc1\.weight, blocks\.3"):
        load_model(str(path))
    torch.save(state | {"head.extra": torch.zeros(1)}, path)
    with pytest.raises(SatAudioError, match=r"unexpected head\.extra$"):
        load_model(str(path))


def test_batchnorm_step_counter_is_optional(tmp_path: Path) -> None:
    state = random_model("SAT_T_2s").state_dict()
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, path)
    assert load_model(str(path)).spec.name == "SAT_T_2s"


def test_unknown_model_name() -> None:
    with pytest.raises(SatAudioError, match=r"neither a known name .* nor an existing file"):
        load_model("SAT_T_3s")


# --- downloads, against a local HTTP server -------------------------------------------------


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            if self.path.startswith("/broken/"):
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                self.wfile.write(b"x" * 1000)
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_load_by_url_downloads_once(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    original = random_model("SAT_T_2s", seed=3)
    save_upstream(original, root / upstream_name("SAT_T_2s"))
    cache = tmp_path / "cache"
    url = f"{base}/{upstream_name('SAT_T_2s')}"
    model = load_model(url, directory=cache, progress=False)
    assert torch.equal(scores_of(model), scores_of(original))
    assert sorted(p.name for p in cache.iterdir()) == [upstream_name("SAT_T_2s")]
    (root / upstream_name("SAT_T_2s")).unlink()  # a second load must use the cache
    assert load_model(url, directory=cache, progress=False).spec.name == "SAT_T_2s"


def test_interrupted_download_leaves_nothing(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_root
    dest = tmp_path / "cache" / "SAT_T_stream2s_mAP_43_34.pt"
    with pytest.raises(SatAudioError, match=r"cannot download .*; fetch it by hand and save it as"):
        download(f"{base}/broken/file.pt", dest, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_unreachable_server(tmp_path: Path) -> None:
    dest = tmp_path / "x.pt"
    with pytest.raises(SatAudioError, match=rf"cannot download http://127.0.0.1:9/x.pt .*{dest}"):
        download("http://127.0.0.1:9/x.pt", dest, progress=False)
    assert list(tmp_path.iterdir()) == []
