"""imitation's trajectory files, read as data: nothing in them is unpickled or decoded into objects.

imitation's own reader (``imitation.data.serialize.load``) calls ``np.load(path, allow_pickle=True)``
on any file, which unpickles a pickle whatever the file is named, and decodes each step's ``infos``
with jsonpickle, which builds arbitrary objects. Either runs code from the file. Here:

* a directory written by ``serialize.save`` (HuggingFace ``datasets``' ``save_to_disk``) is read
  with pyarrow: ``state.json`` names its Arrow files, which must be plain files inside the directory
  (no symlinks); only the ``obs``, ``acts``, ``terminal`` and ``rews`` columns are read, never ``infos``;
* imitation's older ``.npz`` is read with ``np.load(allow_pickle=False)``, ``infos`` (an object
  array) left unread;
* imitation's oldest format, a pickled list of trajectories (``.pkl``), and anything else that only
  unpickling can read, is refused in one line that names the risk.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from rlkit.demos.reader import open_regular, read_regular

from rlkit.errors import RLKitError

_ARROW_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")
_COLUMNS = ("obs", "acts", "terminal")  # and "rews" when the trajectories kept rewards


def pickle_refusal(path: Path, what: str) -> RLKitError:
    return RLKitError(f"{path} {what}, which only unpickling can read; rlkit does not unpickle files: that runs "
                      "any code the file's author put in it. Where you trust the file, re-save it with "
                      "imitation.data.serialize.save(DIR, trajectories), a directory rlkit reads as data")


def read_trajectory_columns(path: Path) -> list[dict[str, Any]]:
    """Each trajectory of an imitation file as ``{"obs", "acts", "terminal", "rews"?}`` numpy data."""
    if path.is_dir():
        return _read_hf_directory(path)
    with os.fdopen(open_regular(path), "rb") as file:
        if file.read(4) == b"PK\x03\x04":
            file.seek(0)
            return _read_npz(file, path)
    # imitation's reader hands every other file to np.load(allow_pickle=True), which unpickles it
    raise pickle_refusal(path, "is neither imitation's datasets directory nor its .npz: imitation reads it as a "
                               "pickle (its old .pkl trajectories)")


# ---------------------------------------------------------------------------------------------
# HuggingFace datasets directory (imitation >= 1.0)
# ---------------------------------------------------------------------------------------------

def _arrow_files(root: Path) -> list[Path]:
    """The Arrow files ``state.json`` names: plain names of files in ``root`` only."""
    try:
        state = json.loads(read_regular(root / "state.json"))
        files = [entry["filename"] for entry in state["_data_files"]]
    except RLKitError as e:
        raise RLKitError(f"{root} is not a directory written by imitation.data.serialize.save ({e})") from None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise RLKitError(f"{root / 'state.json'} is corrupt ({type(e).__name__})") from None
    for name in files:
        if not isinstance(name, str) or not _ARROW_NAME.fullmatch(name) or ".." in name:
            raise RLKitError(f"{root / 'state.json'} names the data file {name!r:.80}; it may only name plain files "
                             f"in {root} (the file is damaged or was made to read elsewhere)")
    return [root / name for name in files]


def _list_to_array(values: Any, where: str) -> np.ndarray:
    """One row of a (nested) Arrow list column as a numpy array; ragged or null rows are damage."""
    import pyarrow as pa
    import pyarrow.compute as pc

    shape = [len(values)]
    while True:
        if isinstance(values, pa.ExtensionArray):
            values = values.storage
        if values.null_count:
            raise RLKitError(f"{where} holds missing values")
        if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)
                or pa.types.is_fixed_size_list(values.type)):
            return values.to_numpy(zero_copy_only=False).reshape(shape)
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        inner = int(lengths[0]) if len(lengths) else 0
        if np.any(lengths != inner):
            raise RLKitError(f"{where} is ragged (its rows have different lengths)")
        shape.append(inner)
        values = values.flatten()


def _read_hf_directory(root: Path) -> list[dict[str, Any]]:
    import pyarrow as pa

    trajectories = []
    for file in _arrow_files(root):
        try:
            table = pa.ipc.open_stream(pa.py_buffer(read_regular(file))).read_all()
        except pa.ArrowException as e:
            raise RLKitError(f"{file} is not a readable Arrow file ({type(e).__name__})") from None
        missing = [c for c in _COLUMNS if c not in table.column_names]
        if missing:
            raise RLKitError(f"{file} has no {', '.join(missing)} column; it holds no imitation trajectories")
        names = [c for c in (*_COLUMNS, "rews") if c in table.column_names]  # never "infos" (jsonpickle)
        columns = {c: table.column(c).combine_chunks() for c in names}
        for row in range(table.num_rows):
            where = f"trajectory {len(trajectories)} of {file}"
            traj: dict[str, Any] = {}
            for c, column in columns.items():
                cell = column[row]
                if not cell.is_valid:
                    raise RLKitError(f"{where} has no {c}")
                traj[c] = bool(cell.as_py()) if c == "terminal" else _list_to_array(cell.values, f"{c} of {where}")
            trajectories.append(traj)
    return trajectories


# ---------------------------------------------------------------------------------------------
# imitation's older .npz (all trajectories concatenated, split at "indices")
# ---------------------------------------------------------------------------------------------

def _npz_array(data: Any, key: str, path: Path) -> np.ndarray:
    try:
        value = data[key]
    except KeyError:
        raise RLKitError(f"{path} has no {key!r} array; it holds no imitation trajectories") from None
    except ValueError as e:  # numpy's "Object arrays cannot be loaded when allow_pickle=False"
        if "pickle" in str(e):
            raise pickle_refusal(path, f"stores {key!r} as pickled objects") from None
        raise RLKitError(f"{path}: {key!r} cannot be read ({e})") from None
    if not isinstance(value, np.ndarray):  # np.load hands back a member that is no .npy as raw bytes
        raise pickle_refusal(path, f"stores {key!r} as something other than a numpy array")
    return value


def _read_npz(file: Any, path: Path) -> list[dict[str, Any]]:
    try:
        data = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise RLKitError(f"cannot read {path} as imitation's .npz ({type(e).__name__}: {e})") from None
    with data:
        keys = ("obs", "acts", "terminal", "indices") + (("rews",) if "rews" in data.files else ())
        arrays = {key: _npz_array(data, key, path) for key in keys}  # "infos" is an object array: never read
    indices, terminal, steps = arrays["indices"], arrays["terminal"], len(arrays["acts"])
    count = len(indices) + 1
    sane = indices.ndim == 1 and indices.dtype.kind in "iu" and terminal.shape == (count,) \
        and len(arrays["obs"]) == steps + count and bool(np.all(np.diff(indices) >= 0)) \
        and (not len(indices) or (0 <= indices[0] and indices[-1] <= steps))
    if not sane:
        raise RLKitError(f"{path} is damaged: its indices, terminal flags and array lengths disagree")
    # As imitation splits them: each trajectory has one more observation than actions.
    parts = {"obs": np.split(arrays["obs"], indices + np.arange(len(indices)) + 1),
             **{k: np.split(arrays[k], indices) for k in ("acts", "rews") if k in arrays}}
    return [{**{k: v[i] for k, v in parts.items()}, "terminal": bool(terminal[i])} for i in range(count)]
