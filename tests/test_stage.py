"""Stage positions as a first placement: simulated fields cut from one specimen, and real files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

import clemlab as cl
from clemlab.errors import ImageError

# where the specimen's (0, 0) sits on the stage, µm
STAGE_OFFSET = np.array([41250.0, -1830.0])


def _specimen(seed=0, size=1200, step=0.05):
    rng = np.random.default_rng(seed)
    world = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6) + \
        0.5 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 2)
    return world, step


def _field(world, step, centre_um, size_um, pixel_um, flip_y=False, frame="LM"):
    """A field of the specimen centred at ``centre_um`` (specimen µm), its stage position set."""
    n = int(round(size_um / pixel_um))
    offs = (np.arange(n) - (n - 1) / 2) * pixel_um
    ys = centre_um[1] + (offs[::-1] if flip_y else offs)
    xs = centre_um[0] + offs
    yy, xx = np.meshgrid(ys / step, xs / step, indexing="ij")
    data = ndimage.map_coordinates(world, [yy, xx], order=1).astype(np.float32)
    stage = STAGE_OFFSET + centre_um
    return cl.as_image(data, pixel_size=pixel_um, frame=frame, modality="LM",
                       attrs={"stage_position": {"x": stage[0], "y": stage[1], "units": "µm"}})


def _truth(p_moving, c_mov, c_fix, mov, fix, flip_y=False):
    """Moving-frame points -> fixed-frame points from the known field centres (specimen µm)."""
    def centre(img):
        e = img.clem.extent
        return np.array([sum(e["x"]) / 2, sum(e["y"]) / 2])
    d = np.asarray(p_moving, float) - centre(mov)
    if flip_y:
        d[:, 1] *= -1
    return d + np.asarray(c_mov) - np.asarray(c_fix) + centre(fix)


def test_placement_of_two_fields_of_one_stage_is_exact():
    world, step = _specimen()
    c_mov, c_fix = (25.0, 30.0), (31.0, 27.5)
    lm = _field(world, step, c_mov, 20.0, 0.1)
    em = _field(world, step, c_fix, 12.0, 0.03, frame="EM")
    t = cl.stage_placement(lm, em)
    pts = np.array([[3.0, 4.0], [10.0, 10.0], [17.5, 2.0]])
    np.testing.assert_allclose(t(pts), _truth(pts, c_mov, c_fix, lm, em), atol=1e-9)
    np.testing.assert_allclose(t.linear, np.eye(2))  # scale 1: both frames in µm
    assert (t.source_frame, t.target_frame) == ("LM", "EM")


def test_register_images_refines_a_stage_placement_with_an_error():
    world, step = _specimen(seed=1)
    c_mov, c_fix = (25.0, 30.0), (29.0, 28.0)
    lm = _field(world, step, c_mov, 20.0, 0.1)
    em = _field(world, step, c_fix, 14.0, 0.05, frame="EM")
    # a stage that is 0.8 µm off in x and 0.5 µm in y
    em.attrs["stage_position"] = {"x": em.attrs["stage_position"]["x"] + 0.8,
                                  "y": em.attrs["stage_position"]["y"] - 0.5, "units": "µm"}
    start = cl.stage_placement(lm, em)
    pts = np.array([[8.0, 8.0], [12.0, 11.0]])
    truth = _truth(pts, c_mov, c_fix, lm, em)
    assert np.abs(start(pts) - truth).max() > 0.4
    match = cl.register_images(lm, em, model="rigid", initial=start)
    assert match.verdict == "good", match.why
    assert np.abs(match.transform(pts) - truth).max() < 0.1  # µm, a tenth of the stage error


def test_flip_option_places_a_mirrored_camera():
    world, step = _specimen(seed=2)
    c_mov, c_fix = (20.0, 22.0), (24.0, 21.0)
    lm = _field(world, step, c_mov, 16.0, 0.1, flip_y=True)
    em = _field(world, step, c_fix, 10.0, 0.05, frame="EM")
    pts = np.array([[2.0, 3.0], [12.0, 9.0], [5.0, 14.0]])
    truth = _truth(pts, c_mov, c_fix, lm, em, flip_y=True)
    t = cl.stage_placement(lm, em, flip_moving="y")
    np.testing.assert_allclose(t(pts), truth, atol=1e-9)
    assert np.linalg.det(t.linear) < 0
    assert np.abs(cl.stage_placement(lm, em)(pts) - truth).max() > 5.0


def _ome_tiff(path, shape, pixel, x0, y0, seed):
    """An OME-TIFF as microscope software writes it (tifffile, no clemlab annotation)."""
    import tifffile

    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": pixel, "PhysicalSizeY": pixel,
        "Plane": {"PositionX": [x0], "PositionY": [y0], "PositionXUnit": ["µm"], "PositionYUnit": ["µm"]}})
    return path


def test_ome_tiff_planes_place_by_their_first_pixel(tmp_path):
    """OME Plane PositionX/Y is the first pixel centre: the image frame is the stage frame."""
    ra = cl.open_image(_ome_tiff(tmp_path / "a.ome.tif", (40, 50), 0.2, 1000.0, 2000.0, 0))
    rb = cl.open_image(_ome_tiff(tmp_path / "b.ome.tif", (30, 30), 0.1, 1003.0, 2001.5, 1))
    assert ra.attrs["stage_position"]["x"] == pytest.approx(1000.0)
    assert rb.clem.origin == pytest.approx({"x": 1003.0, "y": 2001.5})
    t = cl.stage_placement(ra, rb)
    pts = np.array([[1001.0, 2002.0], [1005.5, 2003.0]])
    np.testing.assert_allclose(t(pts), pts, atol=1e-9)


def test_real_lif_images_are_placed_by_their_stage_positions(shared_data):
    """Two images of one Leica file: the shift is the difference of their StagePosX/Y (m)."""
    import liffile

    path = shared_data("lif-readlif/LeicaLASX_wavelength-sweep_example.lif")
    a = cl.open_image(path, image="x_y_lambdaEmi")
    b = cl.open_image(path, image="x_y_lambdaExc")
    expected = {}
    with liffile.LifFile(path) as lif:  # the stage positions read independently, in metres
        for im in lif.images:
            for el in im.xml_element.iter():
                if "StagePosX" in el.attrib:
                    expected[im.name] = np.array([float(el.get("StagePosX")), float(el.get("StagePosY"))]) * 1e6
                    break
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = cl.stage_placement(a, b)
    shift = expected["x_y_lambdaEmi"] - expected["x_y_lambdaExc"]
    np.testing.assert_allclose(t.translation, shift, atol=1e-6)
    np.testing.assert_allclose(np.abs(shift), [44.42, 46.03], atol=0.01)
    # the two 6.7-µm fields are ~64 µm apart: said, not silently returned
    assert any("no overlap" in str(w.message) for w in caught)


def test_real_czi_stage_position_is_the_field_centre(shared_data):
    img = cl.open_image(shared_data("czi-aicspylibczi/s_1_t_1_c_1_z_1.czi"))
    to_stage = cl.stage.image_to_stage(img)
    e = img.clem.extent
    centre = np.array([[sum(e["x"]) / 2, sum(e["y"]) / 2]])
    pos = img.attrs["stage_position"]
    np.testing.assert_allclose(to_stage(centre), [[pos["x"], pos["y"]]])


def test_navigator_style_transform_overrides_the_stage_position():
    """A known image -> stage map (e.g. a SerialEM MapScaleMat with rotation) is used as given."""
    world, step = _specimen(seed=3, size=600)
    lm = _field(world, step, (15.0, 15.0), 10.0, 0.1)
    em = cl.as_image(np.zeros((20, 20), np.float32), pixel_size=0.5, frame="EM")
    rot = cl.Rigid(rotation=np.radians(30), translation=[41262.0, -1818.0])
    em_to_stage = cl.Affine(rot.matrix, source_frame="EM", target_frame="stage")
    t = cl.stage_placement(lm, em, fixed_to_stage=em_to_stage)
    p = np.array([[4.95, 4.95]])  # the LM field centre (100 pixels of 0.1 µm)
    np.testing.assert_allclose(em_to_stage(t(p)), [STAGE_OFFSET + [15.0, 15.0]], atol=1e-9)


def test_missing_stage_position_and_bad_flip_are_refused_in_words():
    a = cl.as_image(np.zeros((10, 10), np.float32), pixel_size=1.0)
    b = cl.as_image(np.zeros((10, 10), np.float32), pixel_size=1.0, attrs={"stage_position": {"x": 100.0, "y": 100.0}})
    with pytest.raises(ImageError, match=r"the moving image has no stage position .* moving_to_stage="):
        cl.stage_placement(a, b)
    with pytest.raises(ImageError, match="flip_moving must be '', 'x', 'y' or 'xy'"):
        cl.stage_placement(b, b, flip_moving="z")
    c = cl.as_image(np.zeros((10, 10), np.float32), pixel_size=1.0,
                    attrs={"stage_position": {"x": 4.0, "y": 1.0, "units": "mm"}})
    with pytest.warns(UserWarning, match="no overlap"):
        np.testing.assert_allclose(cl.stage_placement(c, b).translation, [3900.0, 900.0])


def test_real_serialem_map_places_an_lm_field_at_its_stage_position(shared_data):
    """A SerialEM map (MapScaleMat, rotation and all) as the fixed image: the LM field centre
    lands where the map's pixel -> stage transform puts the LM stage position."""
    import dask.array as da

    item = cl.read_navigator(shared_data("pyem-serialem-nav/sort.nav"))["12-A"]
    h, w = item.map_shape
    em = cl.as_image(da.zeros((h, w), np.uint8), pixel_size=0.01, frame="EM")
    em_to_stage = cl.stage_transform(em, item.pixel_to_stage())
    lm = cl.as_image(np.zeros((50, 50), np.float32), pixel_size=0.1, frame="LM", attrs={"stage_position": {
        "x": float(item.stage_xyz[0]), "y": float(item.stage_xyz[1]), "units": "µm"}})
    t = cl.stage_placement(lm, em, fixed_to_stage=em_to_stage)
    lm_centre = np.array([[2.45, 2.45]])
    em_centre = np.array([[(w - 1) / 2 * 0.01, (h - 1) / 2 * 0.01]])  # the map centre sits at StageXYZ
    np.testing.assert_allclose(t(lm_centre), em_centre, atol=1e-6)
