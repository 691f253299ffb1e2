"""torch.save's files read into numpy, without torch, and without running anything they name.

A .pt file is a zip archive of one folder, `<name>/`: `data.pkl`, the pickled object, whose
tensors name their storage by a key; each storage raw in `data/<key>`; `byteorder` ("little" or
"big"). The pickle is read by an Unpickler that admits what torch.load(weights_only=True) admits
for a state dict: ordered dicts, tensors, parameters and the storages of the dtypes model weights
come in, each admitted name bound to a function of this module. Any other name ends the reading
before it is looked up, so a file cannot make it call anything (a malicious pickle's `__reduce__`
names the function it wants run). Tensors come back as numpy views of their storage with the
saved offset, shape and strides, as torch.load gives them; bfloat16 comes back as float32.
"""

import io
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np

from sat_audio.errors import SatAudioError

STORAGES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(np.uint16),  # the upper half of a float32, widened on reading
    "LongStorage": np.dtype(np.int64),
}
"""torch's storage types a checkpoint's tensors may have, by the item size in the file."""
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
"""The start of torch's format before 1.6: a pickled magic number, not a zip archive."""


class _Refused(Exception):
    """What is wrong with the file, in words for the user."""


def _refuse(reason: str) -> NoReturn:
    raise _Refused(reason)


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype

    def __setstate__(self, state: object) -> None:
        _refuse(f"its pickle sets the state of torch.{self.name}")


class _Storage:
    """One storage's items, read from its zip member."""

    __slots__ = ("items",)

    def __init__(self, items: np.ndarray) -> None:
        self.items = items

    def __setstate__(self, state: object) -> None:
        _refuse("its pickle sets the state of a storage")


class _Tensor:
    """A tensor while the pickle is read: an object no pickle instruction can change."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __setstate__(self, state: object) -> None:
        _refuse("its pickle sets the state of a tensor")


def _whole(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        _refuse(f"a tensor's {what} is {value!r}")
    return value


def _rebuild_tensor(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    hooks: object,
    metadata: object = None,
) -> _Tensor:
    """torch._utils._rebuild_tensor_v2: a view of the storage, checked to lie inside it."""
    if not isinstance(storage, _Storage):
        _refuse(f"a tensor's storage is {type(storage).__name__}")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        _refuse(f"a tensor's size {size!r} and stride {stride!r} do not match")
    if metadata:
        _refuse(f"a tensor carries metadata {metadata!r}")
    start = _whole(offset, "offset")
    shape = [_whole(n, "size") for n in size]
    steps = [_whole(s, "stride") for s in stride]
    items = storage.items
    if 0 in shape:
        return _Tensor(np.empty(shape, items.dtype))
    last = start + sum((n - 1) * s for n, s in zip(shape, steps, strict=True))
    if last >= items.size:
        _refuse(f"a tensor reaches item {last} of a storage of {items.size}")
    view = np.lib.stride_tricks.as_strided(
        items[start:], shape, [s * items.itemsize for s in steps]
    )
    return _Tensor(view)


def _rebuild_parameter(
    data: object, requires_grad: object, hooks: object, *state: object
) -> object:
    """torch._utils._rebuild_parameter(_with_state): a parameter is its tensor here."""
    if not isinstance(data, _Tensor):
        _refuse(f"a parameter holds {type(data).__name__}")
    return data


ADMITTED = {
    "collections.OrderedDict": OrderedDict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
} | {f"torch.{name}": _StorageType(name, dtype) for name, dtype in STORAGES.items()}
"""Every global a checkpoint's pickle may name, and what it stands for here."""


class _Unpickler(pickle.Unpickler):
    """Admits ADMITTED's names only; a storage is read from the archive when first named."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, folder: str, order: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.folder = folder
        self.order = order
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = ADMITTED.get(f"{module}.{name}")
        if found is not None:
            return found
        if module == "torch" and name.endswith("Storage"):
            _refuse(f"it holds torch.{name} tensors; weights are floats (16, 32 or 64 bits)")
        _refuse(f"its pickle calls for {module}.{name}, which a weights file has no use for")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            _refuse(f"its pickle refers to {str(pid)[:80]}, not to a storage")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str):
            _refuse(f"its pickle refers to a storage as {str(pid)[:80]}")
        if not re.fullmatch(r"\w+", key):
            _refuse(f"its pickle names a storage {key!r}")
        if key not in self.storages:
            self.storages[key] = self._read(kind, key, _whole(numel, "storage size"))
        return self.storages[key]

    def _read(self, kind: _StorageType, key: str, numel: int) -> _Storage:
        """The storage's items in the machine's byte order (bfloat16 as float32)."""
        member = f"{self.folder}/data/{key}"
        try:
            info = self.archive.getinfo(member)
        except KeyError:
            _refuse(f"storage {member} is missing")
        dtype = kind.dtype.newbyteorder("<" if self.order == "little" else ">")
        nbytes = numel * dtype.itemsize
        if info.file_size < nbytes:
            _refuse(f"storage {member} holds {info.file_size} bytes, its tensors need {nbytes}")
        items = np.empty(numel, dtype)
        try:
            with self.archive.open(info) as raw:  # a ZipExtFile, which reads into a buffer
                got = cast(io.BufferedIOBase, raw).readinto(items.view(np.uint8).data)
        except (zipfile.BadZipFile, EOFError) as err:
            _refuse(f"storage {member} is damaged: {err}")
        if got != nbytes:
            _refuse(f"storage {member} ends after {got} of {nbytes} bytes")
        if not dtype.isnative:
            items = items.astype(dtype.newbyteorder("="))
        if kind.name == "BFloat16Storage":
            items = (items.astype(np.uint32) << 16).view(np.float32)
        return _Storage(items)


def _tensors_as_arrays(obj: object) -> object:
    """The loaded object with every tensor as its numpy array, in the same containers."""
    if isinstance(obj, _Tensor):
        return obj.array
    if isinstance(obj, dict):
        return type(obj)((k, _tensors_as_arrays(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_tensors_as_arrays(v) for v in obj)
    return obj


def _folder(archive: zipfile.ZipFile) -> str:
    """The archive's one folder, which holds data.pkl (named after the file torch first wrote)."""
    pickles = [n for n in archive.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if len(pickles) != 1:
        _refuse(f"a zip archive with {len(pickles)} data.pkl files, not torch.save's one")
    return pickles[0].split("/")[0]


def _byte_order(archive: zipfile.ZipFile, folder: str) -> str:
    """The byteorder record's, or the machine's for files written before torch recorded it."""
    try:
        order = archive.read(f"{folder}/byteorder").decode("ascii", "replace")
    except KeyError:
        return sys.byteorder
    if order not in ("little", "big"):
        _refuse(f"its byte order is {order[:20]!r}")
    return order


def _not_zip(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(len(LEGACY_MAGIC))
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive cut short or damaged: its directory is missing"
    if head == LEGACY_MAGIC:
        return "torch's format before 1.6, not a zip archive: save it again with a newer torch"
    return "not a zip archive as torch.save writes"


def read_pt(path: Path) -> object:
    """What torch.load(path, weights_only=True) gives, with numpy arrays for tensors."""
    problem = f"checkpoint {path} is not a readable torch checkpoint"
    try:
        if not zipfile.is_zipfile(path):
            raise _Refused(_not_zip(path))
        with zipfile.ZipFile(path) as archive:
            folder = _folder(archive)
            order = _byte_order(archive, folder)
            data = archive.read(f"{folder}/data.pkl")
            try:
                loaded = _Unpickler(data, archive, folder, order).load()
            except _Refused:
                raise
            except Exception as err:  # a damaged pickle fails in many ways, and this is all
                raise _Refused(f"a damaged pickle, {type(err).__name__}: {err}") from None
    except _Refused as err:
        raise SatAudioError(f"{problem} ({err})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise SatAudioError(f"{problem} (a damaged zip archive: {err})") from None
    except OSError as err:
        raise SatAudioError(f"{problem} ({err})") from None
    return _tensors_as_arrays(loaded)
