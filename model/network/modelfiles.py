"""Model files are input: which of them are data, how their bytes are checked, and the SHA-256 the server
holds them to.

Data (never runs code): our ``model.pt`` and checkpoints and torchvision weights (``torch.load`` with
weights only), and ``torch.export`` programs (``.pt2``): every pickle in the archive must load with weights
only, and an archive holding compiled code (AOTInductor, ExecuTorch) or pickled Python objects (custom or
opaque constants, which torch unpickles in full whatever ``weights_only`` says) is refused before torch
reads it; the program's operators are checked by torch's own verifier when it loads (tensor operators
only). Code: a TorchScript file is a program; only the CLI (``ambient units --model torchscript:FILE``)
names one, and the server loads it only for a run published with its recorded digest.

``model/__init__.py`` also forces weights-only loading process-wide (TORCH_FORCE_WEIGHTS_ONLY_LOAD).
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

# Folders of a .pt2 archive whose files torch loads as native code, never as data.
_CODE_FOLDERS = ("data/aotinductor/", "data/executorch/", "data/mtia")
# Constants whose files are tensors; the others (custom_obj_, opaque_obj_) are Python or TorchScript pickles.
_TENSOR_CONSTANT_PREFIX = "tensor_"
# Pickles of the archive format torch.export wrote before 2.8 (tensors, loaded with torch.load).
_LEGACY_PICKLES = ("serialized_state_dict.json", "serialized_constants.json")


class ModelFileRefused(ValueError):
    """A model file that may not be loaded; the message names the file and why."""


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes, read in chunks."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def model_source(path: Path, digests: Mapping[str, str] | None) -> Path | io.BytesIO:
    """What to hand the loader for the model file PATH: the path itself, or where ``digests`` ({resolved path:
    SHA-256}, the server's record of a published run) is given, the file's bytes read once and checked
    against their digest, so that what was checked is what loads."""
    if digests is None:
        return Path(path)
    return io.BytesIO(model_bytes(path, digests))


def model_bytes(path: Path, digests: Mapping[str, str] | None) -> bytes:
    """The bytes of the model file PATH, checked against ``digests`` when given (see ``model_source``).

    Raises ModelFileRefused for a file the digests do not name or whose bytes have another SHA-256."""
    data = Path(path).read_bytes()
    if digests is None:
        return data
    resolved = str(Path(path).resolve())
    if resolved not in digests:
        raise ModelFileRefused(f"model file {resolved} was not recorded when the run was published; "
                               f"publish the run again")
    actual = hashlib.sha256(data).hexdigest()
    if actual != digests[resolved]:
        raise ModelFileRefused(f"model file {resolved} has changed since the run was published (SHA-256 "
                               f"{digests[resolved][:16]}... recorded, {actual[:16]}... now); publish the run again")
    return data


def check_export_archive(data: bytes, path: Path) -> None:
    """Refuse a ``torch.export`` archive (``.pt2``) that holds anything torch would load as code: compiled
    code, pickled Python objects, or a pickle that does not load with weights only.

    Raises ModelFileRefused naming PATH and the archive member."""
    import torch

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ModelFileRefused(f"{path}: not a torch.export program (not a zip archive)") from None
    with archive:
        # torch.export.save puts everything under one folder named after the file; the older format did not.
        names = {_inside_root(info.filename): info.filename for info in archive.infolist()}
        pickles = [name for name in names if name.endswith(".pt") or name in _LEGACY_PICKLES]
        for name, member in names.items():
            if name.startswith(_CODE_FOLDERS):
                raise ModelFileRefused(f"{path}: holds compiled code ({member}); a torch.export program "
                                       f"must be a graph and its tensors")
            if name.endswith(("_weights_config.json", "_constants_config.json")):
                folder = name.rsplit("/", 1)[0] + "/"
                try:
                    entries = json.loads(archive.read(member))["config"]
                except (ValueError, KeyError, TypeError):
                    raise ModelFileRefused(f"{path}: {member} is not a payload list") from None
                for key, entry in entries.items():
                    stored = str(entry.get("path_name", ""))
                    if name.endswith("_constants_config.json") and not stored.startswith(_TENSOR_CONSTANT_PREFIX):
                        raise ModelFileRefused(f"{path}: constant {key!r} is a pickled Python object ({stored}), "
                                               f"which could run code when loaded; only tensors are data")
                    if entry.get("use_pickle"):
                        pickles.append(folder + stored)
        for name in pickles:
            if name not in names:
                continue        # torch reports a missing payload itself
            try:
                torch.load(io.BytesIO(archive.read(names[name])), map_location="cpu", weights_only=True)
            except Exception as error:     # noqa: BLE001: whatever the unpickler says, the file is refused
                raise ModelFileRefused(f"{path}: {names[name]} does not load as weights only, so it could run "
                                       f"code ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    """The line of torch's long weights-only message that says what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return next((line for line in lines if "Unsupported global" in line), lines[0])[:200]


def _inside_root(name: str) -> str:
    first, _, rest = name.partition("/")
    return rest if rest and first not in ("data", "models", "extra") else name
