"""Checkpoint loading, downloading and every way a checkpoint can be wrong."""

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from sat_audio.errors import SatAudioError
from sat_audio.model import registry as registry_module
from sat_audio.model.checkpoint import download, load_model
from sat_audio.model.layout import parameter_layout
from sat_audio.model.registry import ModelSpec, model_dir, registry
from sat_audio.model.sat import build_model
from tests.checkpoints import random_model, save_upstream, upstream_name

pytestmark = pytest.mark.slow

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


@pytest.mark.parametrize("spec", registry().values(), ids=list(registry()))
def test_the_layout_without_torch_is_the_models(spec: ModelSpec) -> None:
    """What a checkpoint is checked against where torch is absent: the torch model's state_dict,
    name for name in its order, shapes and dtypes."""
    with torch.device("meta"):
        model = build_model(spec)
    want = [(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    got = [(k, shape, f"torch.{dtype}") for k, (shape, dtype) in parameter_layout(spec).items()]
    assert got == want


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


def test_default_model_dir_is_the_users_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$XDG_CACHE_HOME/sat-audio/models, else ~/.cache/sat-audio/models: not the package's."""
    monkeypatch.delenv("SAT_AUDIO_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "sat-audio" / "models"
    assert model_dir() == cache
    cache.mkdir(parents=True)
    save_upstream(random_model("SAT_T_2s"), cache / upstream_name("SAT_T_2s"))
    assert load_model("SAT_T_2s", allow_download=False).spec.name == "SAT_T_2s"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_dir() == tmp_path / "home" / ".cache" / "sat-audio" / "models"


def test_a_checkpoint_in_the_old_folder_is_pointed_to_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The package's folder was the default: a checkpoint left there is named, with how to move
    it, and not used from there."""
    old = tmp_path / "site-packages" / "models"
    old.mkdir(parents=True)
    save_upstream(random_model("SAT_T_2s"), old / upstream_name("SAT_T_2s"))
    monkeypatch.setattr(registry_module, "data_dir", lambda: old)
    monkeypatch.delenv("SAT_AUDIO_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    new = tmp_path / "cache" / "sat-audio" / "models"
    registry_module._point_to_old_folder.cache_clear()
    for _ in range(2):
        with pytest.raises(SatAudioError, match=rf"not found at {new / upstream_name('SAT_T_2s')}"):
            load_model("SAT_T_2s", allow_download=False)
    (line,) = [r for r in caplog.records if r.name == "sat_audio.model.registry"]
    assert line.levelname == "WARNING"
    assert line.getMessage() == (
        f"checkpoints in {old} are no longer looked for there; move them to {new} "
        f"(mkdir -p {new} && mv {old}/*.pt {new}/), or set SAT_AUDIO_MODEL_DIR={old} to keep "
        "them where they are"
    )
    # moved: no line
    new.mkdir(parents=True)
    (old / upstream_name("SAT_T_2s")).rename(new / upstream_name("SAT_T_2s"))
    save_upstream(random_model("SAT_T_1s"), old / upstream_name("SAT_T_1s"))
    registry_module._point_to_old_folder.cache_clear()
    caplog.clear()
    assert load_model("SAT_T_2s", allow_download=False).spec.name == "SAT_T_2s"
    assert not [r for r in caplog.records if r.name == "sat_audio.model.registry"]


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
    model = load_model(str(path))
    assert model.spec.name == "SAT_T_2s"
    # the model is built on the meta device: nothing of it may stay there
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and not any(t.is_meta for t in tensors)
    assert model.init_bn[1].num_batches_tracked.item() == 0


def test_other_float_types_load_as_float32(tmp_path: Path) -> None:
    original = random_model("SAT_T_2s", seed=2)
    state = original.state_dict()
    state = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save(state, path)
    loaded = load_model(str(path))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert torch.equal(scores_of(loaded), scores_of(original))


def test_loading_imports_no_python_meta_kernels(sat_t_checkpoint: Path) -> None:
    """Arithmetic on the meta device would import torch._dynamo and sympy (about 75 MB)."""
    code = (
        "import sys; from sat_audio.model.checkpoint import load_model; "
        f"load_model({str(sat_t_checkpoint)!r}); "
        "print(sorted(m for m in ('sympy', 'torch._dynamo') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_model_name() -> None:
    with pytest.raises(SatAudioError, match=r"neither a known name .* nor an existing file"):
        load_model("SAT_T_3s")


# --- downloads, against a local HTTP server -------------------------------------------------


class Served:
    """A local HTTP server for download tests; `midway` runs while a /slow/ file is half sent."""

    def __init__(self, base: str, root: Path) -> None:
        self.base = base
        self.root = root
        self.midway: Callable[[], None] = lambda: None


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "served"
    root.mkdir()
    served: Served

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
            if self.path.startswith("/slow/"):
                data = (root / self.path.removeprefix("/slow/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                time.sleep(0.2)
                served.midway()
                self.wfile.write(data[len(data) // 2 :])
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served = Served(f"http://127.0.0.1:{server.server_address[1]}", root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()


def test_load_by_url_downloads_once(http_root: Served, tmp_path: Path) -> None:
    base, root = http_root.base, http_root.root
    original = random_model("SAT_T_2s", seed=3)
    save_upstream(original, root / upstream_name("SAT_T_2s"))
    cache = tmp_path / "cache"
    url = f"{base}/{upstream_name('SAT_T_2s')}"
    model = load_model(url, directory=cache, progress=False)
    assert torch.equal(scores_of(model), scores_of(original))
    assert sorted(p.name for p in cache.iterdir()) == [upstream_name("SAT_T_2s")]
    (root / upstream_name("SAT_T_2s")).unlink()  # a second load must use the cache
    assert load_model(url, directory=cache, progress=False).spec.name == "SAT_T_2s"


def test_interrupted_download_leaves_nothing(http_root: Served, tmp_path: Path) -> None:
    base = http_root.base
    dest = tmp_path / "cache" / "SAT_T_stream2s_mAP_43_34.pt"
    with pytest.raises(SatAudioError, match=r"cannot download .*; fetch it by hand and save it as"):
        download(f"{base}/broken/file.pt", dest, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_unreachable_server(tmp_path: Path) -> None:
    dest = tmp_path / "x.pt"
    with pytest.raises(SatAudioError, match=rf"cannot download http://127.0.0.1:9/x.pt .*{dest}"):
        download("http://127.0.0.1:9/x.pt", dest, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_goes_to_a_temp_file_with_a_progress_bar(
    http_root: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = upstream_name("SAT_T_2s")
    save_upstream(random_model("SAT_T_2s"), http_root.root / name)
    cache = tmp_path / "cache"
    seen: list[list[str]] = []
    http_root.midway = lambda: seen.append(sorted(p.name for p in cache.iterdir()))
    download(f"{http_root.base}/slow/{name}", cache / name, progress=True)
    # half-way through, only a temp file in the same folder; the real name once complete
    assert len(seen) == 1 and len(seen[0]) == 1, seen
    assert seen[0][0].startswith(name + ".") and seen[0][0].endswith(".part")
    assert [p.name for p in cache.iterdir()] == [name]
    assert (cache / name).read_bytes() == (http_root.root / name).read_bytes()
    bar = capsys.readouterr().err
    assert name in bar and "100%" in bar, bar
