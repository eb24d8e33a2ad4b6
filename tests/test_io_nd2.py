"""Nikon ND2: error paths only.

No ND2 file is shared with the project and the nd2 package reads but does not write ND2, so
reading real pixels and metadata is not tested here (README says so).
"""

from __future__ import annotations

import pytest

import clemlab
from clemlab.errors import FileFormatError
from clemlab.io import detect_format, open_image


def test_damaged_nd2_names_the_file(tmp_path):
    bad = tmp_path / "damaged.nd2"
    bad.write_bytes(b"\xda\xce\xbe\x0a" + bytes(4000))  # the ND2 magic number, then nothing valid
    assert detect_format(bad) == "nd2"
    for call in (open_image, clemlab.list_images):
        with pytest.raises(FileFormatError, match="not a readable ND2 file") as info:
            call(bad)
        assert str(bad) in str(info.value)


def test_file_named_nd2_that_is_not(tmp_path):
    fake = tmp_path / "fake.nd2"
    fake.write_bytes(b"hello" * 100)
    with pytest.raises(FileFormatError, match="named like a ND2 file but does not start with the ND2 magic"):
        open_image(fake)
