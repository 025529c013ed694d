"""An anchor download in progress: the bytes received so far and the manifest they belong to, kept on disk.

``<dir>/manifest.json`` is written when the coordinator's manifest first arrives, before any byte; the files
grow under ``<dir>/files/`` in stream order. A later fetch declares what it holds (``have``) and the coordinator
sends only the rest, so a completed file is never downloaded again. Every file is checked against the manifest
(size, sha256) before the directory is renamed into place; a file that does not match is deleted, so the next
fetch downloads only that one again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from bar_model.durable import fsync_dir, fsync_tree
from protocol.errors import BarFedError
from protocol.package import file_sha256
from protocol.v1 import barfed_pb2 as pb


def _safe_name(path: str) -> bool:
    return bool(path) and "/" not in path and "\\" not in path and not path.startswith(".") and "\0" not in path


class PartialAnchor:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.files = self.directory / "files"
        self.manifest_path = self.directory / "manifest.json"
        self.declared: dict[str, tuple[int, str]] = {}
        self._handles: dict[str, BinaryIO] = {}
        self.received = 0  # bytes this fetch downloaded (what a resumed fetch saved is the rest)
        if self.manifest_path.is_file():
            known = json.loads(self.manifest_path.read_text())
            self.fingerprint: str | None = known["fingerprint"]
            self.declared = {f["path"]: (f["size"], f["sha256"]) for f in known["files"]}
        else:
            self.fingerprint = None
            shutil.rmtree(self.files, ignore_errors=True)  # bytes without their manifest cannot be trusted

    def have(self) -> dict[str, int]:
        """Bytes held of each declared file; a file longer than declared is emptied (it is something else)."""
        held = {}
        for path, (size, _digest) in self.declared.items():
            local = self.files / path
            if not local.is_file():
                continue
            if local.stat().st_size > size:
                local.unlink()
                continue
            held[path] = local.stat().st_size
        return held

    def start(self, manifest: pb.AnchorManifest) -> None:
        if self.fingerprint is not None and manifest.fingerprint != self.fingerprint:
            raise BarFedError("BAD_ANCHOR_STREAM", "the coordinator sent another anchor than the one it was asked for.")
        for declared in manifest.files:
            if not _safe_name(declared.path):
                raise BarFedError("BAD_ANCHOR_STREAM", f"the anchor declares a file named {declared.path[:80]!r}.")
        self.declared = {f.path: (f.size, f.sha256) for f in manifest.files}
        self.fingerprint = manifest.fingerprint
        self.files.mkdir(parents=True, exist_ok=True)
        record = {
            "fingerprint": manifest.fingerprint,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in manifest.files],
        }
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(tmp, self.manifest_path)

    def size(self, path: str) -> int:
        return self.declared[path][0]

    def write(self, chunk: pb.FileChunk) -> int:
        """Append ``chunk`` where its file ends; returns the file's length now."""
        if chunk.path not in self.declared:
            raise BarFedError("BAD_ANCHOR_STREAM", "the coordinator sent a file it did not declare.")
        fh = self._handles.get(chunk.path)
        if fh is None:
            fh = self._handles[chunk.path] = open(self.files / chunk.path, "ab")  # noqa: SIM115 (closed in close())
        if fh.tell() != chunk.offset or chunk.offset + len(chunk.data) > self.size(chunk.path):
            raise BarFedError("BAD_ANCHOR_STREAM", f"{chunk.path} arrived out of order; fetch again to resume.")
        fh.write(chunk.data)
        fh.flush()  # in the kernel's hands: what a killed fetch received counts when it resumes
        self.received += len(chunk.data)
        done = fh.tell()
        if done == self.size(chunk.path):
            self._handles.pop(chunk.path).close()
        return done

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def check(self, manifest: pb.AnchorManifest) -> None:
        """Every declared file complete and intact; a damaged one is deleted so only it is fetched again."""
        for declared in manifest.files:
            path = self.files / declared.path
            if declared.size == 0 and not path.exists():
                path.touch()
            if not path.is_file() or path.stat().st_size != declared.size or file_sha256(path) != declared.sha256:
                path.unlink(missing_ok=True)
                raise BarFedError(
                    "BAD_ANCHOR_STREAM", f"{declared.path} did not arrive intact; fetch again (only it is resent)."
                )
        extra = sorted(p.name for p in self.files.iterdir() if p.name not in self.declared)
        for name in extra:
            (self.files / name).unlink()

    def reset(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.fingerprint, self.declared = None, {}

    def publish(self, target: Path) -> None:
        """The checked files become ``target`` in one rename."""
        if target.exists():
            raise BarFedError("OUTPUT_EXISTS", f"{target} already exists; remove it to fetch the anchor again.")
        fsync_tree(self.files)
        os.rename(self.files, target)
        fsync_dir(target.parent)
        shutil.rmtree(self.directory, ignore_errors=True)
