"""Checkpoints read without torch (model/pt_file.py, checkpoint.read_weights): the arrays
torch.load gives, bit for bit, and every malicious or broken file as one line."""

import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from sat_audio.errors import SatAudioError
from sat_audio.model.checkpoint import read_weights
from sat_audio.model.pt_file import read_pt
from sat_audio.model.registry import registry
from tests.checkpoints import random_model, save_upstream, upstream_name, without_torch

pytestmark = pytest.mark.slow


def assert_same_arrays(ours: object, theirs: object) -> None:
    """ours (numpy) holds what theirs (torch.load's) holds, in the same containers and order."""
    assert isinstance(ours, dict) and isinstance(theirs, dict)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        if isinstance(value, dict):
            assert_same_arrays(ours[key], value)
            continue
        want = value.numpy()
        assert ours[key].dtype == want.dtype, key
        assert ours[key].shape == want.shape, key
        assert np.array_equal(ours[key], want), key


@pytest.mark.parametrize("variant", list(registry()))
def test_every_variant_reads_as_torch_load_gives_it(tmp_path: Path, variant: str) -> None:
    """Upstream's layout (under 'model', with torchaudio's buffers) and a bare state dict."""
    model = random_model(variant, seed=11)
    for under_model in (True, False):
        path = save_upstream(model, tmp_path / upstream_name(variant), under_model=under_model)
        want = torch.load(path, map_location="cpu", weights_only=True)
        got = read_pt(path)
        assert_same_arrays(got, want)
        state = got["model"] if under_model else got
        assert "init_bn.1.num_batches_tracked" in state and "front_end.0.mel_scale.fb" in state
        del want, got, state


def test_views_shared_storages_and_narrow_floats_read_as_torch_load_gives_them(
    tmp_path: Path,
) -> None:
    """A transposed view keeps its strides, two views of one storage share it, a slice keeps its
    offset; float16 stays float16, bfloat16 becomes float32 of the same value."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "transposed": base.T,
        "row": base[2],
        "column": base[:, 3],
        "half": torch.linspace(-3, 3, 7).half(),
        "count": torch.tensor(7),
    }
    path = tmp_path / "views.pt"
    torch.save(state, path)
    got = read_pt(path)
    assert isinstance(got, dict)
    assert_same_arrays(got, torch.load(path, weights_only=True))
    assert got["transposed"].strides == (4, 24)
    assert np.shares_memory(got["row"], got["column"])
    torch.save({"b": torch.linspace(-3, 3, 7).bfloat16()}, path)
    bfloat = read_pt(path)["b"]  # type: ignore[index]
    want = torch.load(path, weights_only=True)["b"].float().numpy()
    assert bfloat.dtype == np.float32 and np.array_equal(bfloat, want)


def rewrite(path: Path, out: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of the archive with members replaced (or left out, for None) by their name's end."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            ending = next((e for e in change if info.filename.endswith("/" + e)), None)
            if ending is None:
                dst.writestr(info, src.read(info))
            elif change[ending] is not None:
                dst.writestr(info.filename, change[ending])
    return out


def test_a_big_endian_file_reads_as_the_little_endian_one(tmp_path: Path) -> None:
    """torch writes the machine's byte order and records it; a file from a big-endian machine
    has each storage's bytes swapped."""
    state = {"w": torch.randn(3, 5), "n": torch.tensor(1000)}
    path = tmp_path / "little.pt"
    torch.save(state, path)
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if "/data/" in n]
        swapped: dict[str, bytes | None] = {"byteorder": b"big"}
        for name, tensor in zip(names, state.values(), strict=True):
            swapped[name.split("/", 1)[1]] = tensor.numpy().byteswap().tobytes()
    got = read_pt(rewrite(path, tmp_path / "big.pt", swapped))
    assert_same_arrays(got, torch.load(path, weights_only=True))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pt")
    return save_upstream(random_model("SAT_T_2s", seed=3), folder / upstream_name("SAT_T_2s"))


def one_line_error(path: Path) -> str:
    """read_weights' message on path: one line, naming the file."""
    with pytest.raises(SatAudioError) as err:
        read_weights(str(path), variant="SAT_T_2s")
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


class Payload:
    """A pickle that runs a shell command when loaded, as a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save({"model": {"blocks.0.norm1.weight": Payload(marker)}}, path)
    message = one_line_error(path)
    assert message.endswith(
        "(its pickle calls for posix.system, which a weights file has no use for)"
    )
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unrestricted load runs it
    assert marker.exists()


def test_a_truncated_archive(tmp_path: Path, checkpoint: Path) -> None:
    path = tmp_path / checkpoint.name
    path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    assert "a zip archive cut short or damaged" in one_line_error(path)


def test_a_damaged_storage(tmp_path: Path, checkpoint: Path) -> None:
    """A flipped byte in a storage: the archive's checksum catches it."""
    data = bytearray(checkpoint.read_bytes())
    with zipfile.ZipFile(checkpoint) as archive:
        info = archive.getinfo(next(n for n in archive.namelist() if n.endswith("/data/0")))
    name_and_extra = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + sum(name_and_extra) + 100] ^= 0xFF  # the local header's end
    path = tmp_path / checkpoint.name
    path.write_bytes(bytes(data))
    assert "/data/0 is damaged: Bad CRC-32 for file" in one_line_error(path)


def test_a_missing_or_short_storage(tmp_path: Path, checkpoint: Path) -> None:
    path = tmp_path / checkpoint.name
    rewrite(checkpoint, path, {"data/3": None})
    assert one_line_error(path).endswith("/data/3 is missing)")
    rewrite(checkpoint, path, {"data/3": b"\0" * 10})
    assert "/data/3 holds 10 bytes, its tensors need " in one_line_error(path)


def test_a_legacy_or_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save({"x": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    assert "torch's format before 1.6, not a zip archive" in one_line_error(path)
    path.write_bytes(b"RIFF" + bytes(100))
    assert "not a zip archive as torch.save writes" in one_line_error(path)


def test_a_damaged_pickle(tmp_path: Path, checkpoint: Path) -> None:
    path = tmp_path / checkpoint.name
    rewrite(checkpoint, path, {"data.pkl": b"\x80\x02}q\x00(X\x05\x00\x00\x00model"})
    assert "a damaged pickle" in one_line_error(path)


def test_tensors_of_other_types(tmp_path: Path) -> None:
    """Types no weight comes in are refused as the file is read; an integer where the model has
    a float, when checked against the variant."""
    state = random_model("SAT_T_2s").state_dict()
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save(state | {"norm.weight": state["norm.weight"].int()}, path)
    assert "it holds torch.IntStorage tensors; weights are floats" in one_line_error(path)
    torch.save(state | {"norm.weight": state["norm.weight"].long()}, path)
    assert one_line_error(path).endswith(
        "does not fit SAT_T_2s: type of norm.weight int64 (model float32)"
    )


class View:
    """A tensor of six float32 items with any offset, size and stride, written by HandWritten."""

    items = np.arange(6, dtype=np.float32).tobytes()

    def __init__(self, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.args = (self.items, offset, size, stride, False, OrderedDict())


class HandWritten(pickle.Pickler):
    """Writes tensors as torch.save does, with offsets and sizes it would never write."""

    def persistent_id(self, obj: object) -> object:
        if obj is View.items:
            return ("storage", torch.FloatStorage, "0", "cpu", 6)
        return None

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, View):
            return torch._utils._rebuild_tensor_v2, obj.args
        return NotImplemented


def hand_written(path: Path, view: View) -> Path:
    data = io.BytesIO()
    HandWritten(data, protocol=2).dump({"w": view})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hand/data.pkl", data.getvalue())
        archive.writestr("hand/data/0", View.items)
    return path


def test_a_tensor_reaching_outside_its_storage(tmp_path: Path) -> None:
    """A view is checked against its storage before numpy makes it: no read past the end."""
    path = tmp_path / "hand.pt"
    for view in (View(4, (3,), (1,)), View(0, (2, 3), (4, 1))):
        with pytest.raises(SatAudioError, match=r"\(a tensor reaches item 6 of a storage of 6\)$"):
            read_pt(hand_written(path, view))
    inside = read_pt(hand_written(path, View(1, (2,), (2,))))
    assert inside["w"].tolist() == [1.0, 3.0]  # type: ignore[index]


def test_the_checks_against_the_variant_word_as_load_model(tmp_path: Path) -> None:
    """read_weights names missing, unexpected and mis-shaped parameters as load_model does."""
    state = random_model("SAT_T_2s").state_dict()
    path = tmp_path / upstream_name("SAT_T_2s")
    torch.save({k: v for k, v in state.items() if not k.startswith("blocks.3.mlp")}, path)
    assert "is not a SAT_T_2s checkpoint: missing blocks.3.mlp.fc1.weight" in one_line_error(path)
    torch.save(state | {"head.extra": torch.zeros(1)}, path)
    assert one_line_error(path).endswith("is not a SAT_T_2s checkpoint: unexpected head.extra")
    torch.save(random_model("SAT_T_1s").state_dict(), path)
    assert one_line_error(path).endswith(
        "does not fit SAT_T_2s: shape of time_pos_embed (1, 192, 1, 12) (model (1, 192, 1, 24))"
    )


def test_reading_and_checking_need_no_torch(tmp_path: Path, checkpoint: Path) -> None:
    """In a process where `import torch` fails: the arrays come, checked and float32."""
    shutil.copy(checkpoint, tmp_path / checkpoint.name)
    code = (
        "from sat_audio.model.checkpoint import read_weights\n"
        f"w = read_weights({str(tmp_path / checkpoint.name)!r})\n"
        "print(w.spec.name, len(w.state), sorted({str(a.dtype) for a in w.state.values()}))\n"
    )
    env = without_torch(tmp_path / "site")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout == "SAT_T_2s 183 ['float32', 'int64']\n"
