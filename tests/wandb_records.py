"""Read what an offline W&B run logged, from its ``run-*.wandb`` file.

Offline runs keep everything in a LevelDB-style log of protobuf ``Record`` messages (7-byte
file header, 32 KiB blocks, each record chunk behind a 7-byte checksum/length/type header);
this reader turns it back into history rows, so tests check what W&B really received.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < HEADER:
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunk = data[position + HEADER : position + HEADER + length]
        if len(chunk) < length:  # the writer is still appending this record
            return
        position += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        else:
            return


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    out = []
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def finished_records(run_dir: Path, timeout: float = 60.0) -> list:
    """The run's records once its exit record is on disk (wandb-core flushes after finish())."""
    (path,) = run_dir.glob("run-*.wandb")
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            found = records(path)
        except DecodeError:  # read while a record was half written: read again
            if time.monotonic() > deadline:
                raise
            found = []
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def history(run_dir: Path) -> list[dict]:
    """History rows (key -> decoded value) of the offline run whose files are in ``run_dir``."""
    rows = []
    for record in finished_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def config(run_dir: Path) -> dict:
    """The run's config as W&B received it (last value of each key)."""
    values: dict = {}
    for record in finished_records(run_dir):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def media(run_dir: Path, key: str) -> list[dict]:
    """Each logged value of the media (table, images) ``key``, its nested fields regrouped:
    W&B stores ``{"_type": "table-file", "path": ...}`` under ``key/_type``, ``key/path``..."""
    prefix = key + "/"
    found = []
    for row in history(run_dir):
        fields = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
        if "_type" in fields:
            found.append(fields)
    return found


def table(run_dir: Path, key: str) -> tuple[list[str], list[list]]:
    """Columns and rows of the last ``wandb.Table`` logged as ``key`` (read from its media file)."""
    logged = [m for m in media(run_dir, key) if m["_type"] == "table-file"]
    if not logged:
        raise KeyError(f"no table logged as '{key}'")
    content = json.loads((run_dir / "files" / logged[-1]["path"]).read_text())
    return content["columns"], content["data"]


def image_files(run_dir: Path, key: str) -> list[Path]:
    """The image files of every ``wandb.Image`` logged as ``key``."""
    files = []
    for logged in media(run_dir, key):
        if logged["_type"] == "images/separated":
            files += [run_dir / "files" / name for name in logged["filenames"]]
        elif logged["_type"] == "image-file":
            files.append(run_dir / "files" / logged["path"])
    return files
