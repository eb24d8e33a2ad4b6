"""Every public writer writes atomically: new files get the permissions the umask allows, an
existing file is replaced only when asked, and a write that fails leaves the old file intact."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest

import clemlab as cl
from clemlab.errors import FileFormatError
from clemlab.io import read_navigator

# Writes one file through each public writer with the given umask, in a fresh process (the
# umask is process-wide, so the test process's own is left alone), and prints their modes.
WRITERS = r"""
import json, os, sys
import numpy as np, pandas as pd
os.umask(int(sys.argv[2], 8))
import clemlab as cl
from clemlab.io import read_navigator
from clemlab.io.serialem import read_autodoc, write_autodoc
out = sys.argv[1]
img = cl.as_image(np.arange(64, dtype=np.uint8).reshape(8, 8), pixel_size=0.5, modality="EM")
files = [cl.write_ome_tiff(img, os.path.join(out, "a.ome.tif"))]
rng = np.random.default_rng(0)
src = rng.uniform(0, 50, (8, 2))
lms = cl.Landmarks.from_points(src, src * 1.1 + 2)
files.append(lms.save(os.path.join(out, "l.json")))
files.append(lms.save(os.path.join(out, "l.csv")))
files.append(lms.to_bigwarp(os.path.join(out, "bw.csv")))
files.append(lms.to_ecclem(os.path.join(out, "e.xml")))
files.append(cl.register(lms, model="affine").save(os.path.join(out, "r.json")))
targets = pd.DataFrame({"name": ["a", "b"], "x": [1.0, 2.0], "y": [3.0, 4.0]})
files.append(cl.write_navigator(targets, os.path.join(out, "t.nav")))
files.append(os.path.join(out, "t.csv"))
files.append(read_navigator(files[-2]).write(os.path.join(out, "u.nav"), "xml"))
files.append(write_autodoc(read_autodoc(files[-3]), os.path.join(out, "v.adoc")))
print(json.dumps({os.path.basename(str(f)): os.stat(f).st_mode & 0o7777 for f in files}))
"""


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_new_files_get_the_umask_mode(tmp_path, umask):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", WRITERS, str(tmp_path), oct(umask)[2:]],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(modes) == {"a.ome.tif", "l.json", "l.csv", "bw.csv", "e.xml", "r.json", "t.nav", "t.csv", "u.nav",
                          "v.adoc"}
    assert modes == {name: 0o666 & ~umask for name in modes}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(modes)  # no temporary files left


def _image(values=0):
    return cl.as_image(np.full((16, 16), values, np.uint8), pixel_size=0.5, modality="EM")


def _targets():
    return pd.DataFrame({"name": ["a", "b"], "x": [1.0, 2.0], "y": [3.0, 4.0]})


def test_existing_files_are_replaced_only_when_asked(tmp_path):
    tif, nav = tmp_path / "a.ome.tif", tmp_path / "t.nav"
    for p in (tif, nav, tmp_path / "t.csv"):
        p.write_bytes(b"mine")
    with pytest.raises(FileFormatError, match="exists; pass overwrite=True"):
        cl.write_ome_tiff(_image(), tif)
    with pytest.raises(FileFormatError, match="exists; pass overwrite=True"):
        cl.write_navigator(_targets(), tmp_path / "other.nav", csv=tmp_path / "t.csv")
    assert not (tmp_path / "other.nav").exists()  # the CSV was refused before the navigator was written
    with pytest.raises(FileFormatError, match="exists; pass overwrite=True"):
        cl.write_navigator(_targets(), nav, csv=False)
    with pytest.raises(FileFormatError, match="exists; pass overwrite=True"):
        read_navigator(cl.write_navigator(_targets(), tmp_path / "n.nav", csv=False)).write(nav)
    assert all(p.read_bytes() == b"mine" for p in (tif, nav, tmp_path / "t.csv"))

    # overwrite=True replaces only a file of the format being written
    with pytest.raises(FileExistsError, match="is not a TIFF file"):
        cl.write_ome_tiff(_image(7), tif, overwrite=True)
    with pytest.raises(FileExistsError, match="is not a SerialEM navigator file"):
        cl.write_navigator(_targets(), nav, overwrite=True)
    assert all(p.read_bytes() == b"mine" for p in (tif, nav))
    tif.unlink()
    nav.unlink()
    cl.write_ome_tiff(_image(1), tif)
    cl.write_navigator(_targets(), nav, csv=False)

    os.chmod(tif, 0o640)
    cl.write_ome_tiff(_image(7), tif, overwrite=True)
    assert int(cl.open_image(tif).max()) == 7
    assert stat.S_IMODE(tif.stat().st_mode) == 0o640  # a replaced file keeps its permissions
    cl.write_navigator(_targets(), nav, overwrite=True)
    assert read_navigator(nav).labels == ["a", "b"] and (tmp_path / "t.csv").read_text().startswith("name,")


def test_a_failed_write_leaves_the_old_file_intact(tmp_path):
    tif = tmp_path / "a.ome.tif"
    cl.write_ome_tiff(_image(3), tif)
    before = tif.read_bytes()

    def plane(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("disk on fire")
        return block

    failing = da.zeros((4, 16, 16), np.uint8, chunks=(1, 16, 16)).map_blocks(plane, dtype=np.uint8)
    img = cl.as_image(failing, pixel_size=0.5, modality="EM")
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="disk on fire"):
        cl.write_ome_tiff(img, tif, overwrite=True)  # fails after two planes are written
    assert tif.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.ome.tif"]


def test_a_file_appearing_during_the_write_is_not_replaced(tmp_path):
    tif = tmp_path / "a.ome.tif"

    def plane(block):
        tif.write_bytes(b"someone else's")  # another program creates the file meanwhile
        return block

    img = cl.as_image(da.zeros((16, 16), np.uint8, chunks=16).map_blocks(plane, dtype=np.uint8), pixel_size=0.5)
    with dask.config.set(scheduler="synchronous"), pytest.raises(FileFormatError, match="exists"):
        cl.write_ome_tiff(img, tif)
    assert tif.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["a.ome.tif"]


def test_a_symbolic_link_is_written_through(tmp_path):
    target = tmp_path / "real.ome.tif"
    cl.write_ome_tiff(_image(1), target)
    link = tmp_path / "link.ome.tif"
    try:
        link.symlink_to(target)
    except OSError:
        pytest.skip("this file system has no symbolic links")
    with pytest.raises(FileFormatError, match="exists"):
        cl.write_ome_tiff(_image(2), link)
    cl.write_ome_tiff(_image(2), link, overwrite=True)
    assert link.is_symlink() and int(cl.open_image(target).max()) == 2


def test_unwritable_destinations_are_named(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist; create it first"):
        cl.write_navigator(_targets(), tmp_path / "no" / "t.nav")
    with pytest.raises(FileFormatError, match="is a folder"):
        cl.write_ome_tiff(_image(), tmp_path)
