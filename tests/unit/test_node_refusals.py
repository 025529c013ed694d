"""`barfed node` turns a full disk into DISK_FULL with advice, and lets every other OS error through."""

from __future__ import annotations

import errno

import pytest

from contributor_node.cli.shared import refusals
from protocol.errors import BarFedError


def test_a_full_disk_is_disk_full_naming_the_file():
    @refusals
    def write_a_shard():
        raise OSError(errno.ENOSPC, "No space left on device", "/node/experts/.math.partial/model.safetensors")

    with pytest.raises(BarFedError) as refused:
        write_a_shard()
    assert refused.value.code == "DISK_FULL"
    assert "/node/experts/.math.partial/model.safetensors" in refused.value.message and "rerun" in refused.value.message


def test_other_os_errors_are_not_called_a_full_disk():
    @refusals
    def read_a_missing_file():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/node/anchor.json")

    with pytest.raises(FileNotFoundError):
        read_a_missing_file()
