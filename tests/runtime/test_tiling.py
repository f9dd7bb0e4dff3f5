"""Tiled inference (`Runner.predict(images, tile=...)`, `--tile`): large images at native size.

Fast tests check `keras_unet.runtime.tiling` (tiles cover every pixel with the asked
overlap, the last one flush with the edge; the weighted blend of a constant field is that
constant) and drive `Runner` with a numpy "model" whose output is a per-pixel function of
its input, so a tiled prediction must equal the same function of the whole image: any seam,
shift or resize would show. Real models:
test_tiling_models.py.
"""

import json

import numpy as np
import pytest
from PIL import Image

from keras_unet import cli
from keras_unet.runtime.base import Runner
from keras_unet.runtime.metadata import tensor_metadata
from keras_unet.runtime.tiling import (
    DEFAULT_OVERLAP,
    TileBlender,
    blend,
    pad_to_tile,
    tile_boxes,
    tile_overlap,
    tile_starts,
    tile_window,
)

RNG = np.random.default_rng(0)


# keras_unet.runtime.tiling -------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 31, 32, 33, 63, 100, 128, 257, 1000])
@pytest.mark.parametrize("tile", [1, 8, 32])
@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_tiles_cover_every_pixel_with_the_asked_overlap_and_end_flush(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length <= tile:
        assert starts == [0]  # one tile; the image is padded up to it
        return
    assert starts[-1] == length - tile  # flush with the edge, never past it
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + tile] = True
    assert covered.all()
    shared = min(round(overlap * tile), tile - 1)
    steps = np.diff(starts)
    assert steps.min() >= 1 and tile - steps.max() >= shared  # at least the asked overlap
    # ... with as few tiles as that allows (evenly spaced, no sliver at the end)
    assert len(starts) == -(-(length - tile) // (tile - shared)) + 1
    assert steps.max() - steps.min() <= 1


def test_tile_boxes_cover_an_image_row_by_row():
    boxes = tile_boxes((300, 200), (128, 96), 0.25)
    count = np.zeros((300, 200), int)
    for top, left, bottom, right in boxes:
        assert (bottom - top, right - left) == (128, 96) and bottom <= 300 and right <= 200
        count[top:bottom, left:right] += 1
    assert count.min() >= 1
    assert boxes == sorted(boxes)
    assert tile_boxes((200, 128), (128, 128), 0.25) == [(0, 0, 128, 128), (72, 0, 200, 128)]
    assert tile_boxes((50, 40), (64, 64)) == [(0, 0, 64, 64)]  # smaller: one padded tile


def test_tile_argument_means_an_overlap_or_no_tiling():
    assert tile_overlap(None) is None and tile_overlap(False) is None
    assert tile_overlap(True) == DEFAULT_OVERLAP == 0.25
    assert tile_overlap(0) == 0.0 and tile_overlap(0.5) == 0.5 and tile_overlap(np.float32(0.5)) == 0.5
    for bad in (1, 1.0, -0.1, float("nan"), "yes", (0.2,)):
        with pytest.raises(ValueError, match=r"`tile` must be .* Received: tile="):
            tile_overlap(bad)
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 32, True)
    with pytest.raises(ValueError, match="tile_size"):
        tile_boxes((100, 100), (32, 0))
    with pytest.raises(ValueError, match="tile_size"):
        tile_window((32,), 0.25)


def test_window_ramps_over_the_overlap_and_cross_fades_to_one():
    window = tile_window((32, 16), 0.25)
    assert window.shape == (32, 16) and window.dtype == np.float32
    assert window.min() > 0 and window.max() == 1.0
    assert np.all(window[8:24, 4:12] == 1.0)  # inside the overlap border: full weight
    assert window[0, 8] < 0.01 and window[1, 8] < 0.1  # a tile's edge barely counts
    assert np.all(np.diff(window[:9, 8]) > 0)  # rising over the 8 border rows
    np.testing.assert_allclose(window, window[::-1, ::-1])  # symmetric
    # Two tiles sharing exactly the ramp (8 rows) add up to 1 there.
    np.testing.assert_allclose(window[24:, 8] + window[:8, 8], 1.0, rtol=1e-6)
    assert np.all(tile_window((8, 8), 0.0) == 1.0)
    np.testing.assert_allclose(tile_window((4, 4), 0.25)[0], [0.25, 0.5, 0.5, 0.25])


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.6])
@pytest.mark.parametrize("image_size", [(24, 24), (70, 45), (131, 257)])
def test_blending_a_constant_field_gives_the_constant(image_size, overlap):
    boxes = tile_boxes(image_size, (24, 24), overlap)
    window = tile_window((24, 24), overlap)
    constant = np.array([0.3, 0.7, 1e-4], np.float32)
    tiles = [np.broadcast_to(constant, (24, 24, 3)) for _ in boxes]
    blended = blend(tiles, boxes, image_size, window)
    assert blended.shape == (*image_size, 3) and blended.dtype == np.float32
    # Exact up to float32 rounding (a few ulps): the weights normalise.
    np.testing.assert_allclose(blended, np.broadcast_to(constant, blended.shape), rtol=1e-6, atol=0)


def test_blending_averages_overlaps_with_the_window_weights():
    window = tile_window((4, 4), 0.5)
    blender = TileBlender((4, 6), window)
    blender.add(np.zeros((4, 4)), (0, 0, 4, 4))
    blender.add(np.ones((4, 4)), (0, 2, 4, 6))
    row = blender.result()[1, :, 0]
    assert row[0] == 0 and row[-1] == 1  # one tile only: its value whatever its weight
    w = window[1]
    np.testing.assert_allclose(row[2:4], w[:2] / (w[2:] + w[:2]))  # the shared columns
    np.testing.assert_allclose(blender.result(crop=(2, 3))[..., 0], blender.result()[:2, :3, 0])
    with pytest.raises(ValueError, match="Each tile must be"):
        blender.add(np.ones((3, 4)), (0, 0, 3, 4))
    with pytest.raises(ValueError, match="outside the image"):
        blender.add(np.ones((4, 4)), (0, 4, 4, 8))
    with pytest.raises(ValueError, match="No tile"):
        TileBlender((4, 4), window).result()
    with pytest.raises(ValueError, match="covered by no tile"):
        blend([np.ones((4, 4))], [(0, 0, 4, 4)], (4, 8), window)


def test_small_images_are_reflect_padded_not_resized():
    image = RNG.uniform(0, 255, (5, 40, 3)).astype(np.float32)
    padded = pad_to_tile(image, (16, 16))
    assert padded.shape == (16, 40, 3)
    np.testing.assert_array_equal(padded[:5], image)  # the image itself, top-left
    np.testing.assert_array_equal(padded[5], image[3])  # mirrored below its last row
    assert pad_to_tile(image, (4, 4)) is image
    assert pad_to_tile(np.ones((1, 1)), (3, 2)).shape == (3, 2)


# Runner with a numpy model ------------------------------------------------------------
def pixel_probabilities(images):
    """The fake model: a per-pixel function of the first channel (no context at all)."""
    x = np.asarray(images, np.float32)[..., :1]
    return 1.0 / (1.0 + np.exp(-(x - 128.0) / 16.0))


def pixel_classes(images):
    """Three classes from the three channels, softmax: argmax is the brightest channel."""
    x = np.asarray(images, np.float32) / 32.0
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class PixelRunner(Runner):
    """A runner whose model is `function` of the prepared batch; records the batch shapes."""

    format = "onnx"

    def __init__(self, function=pixel_probabilities, input_size=(16, 16), num_classes=1,
                 input_dtype=np.float32, stored_size=None):
        self.function = function
        self.input_size = input_size
        self.input_dtype = np.dtype(input_dtype)
        self.input_quantization = self.output_quantization = None
        self.shapes = []
        metadata = tensor_metadata("onnx", input_size, 3, num_classes, input_dtype, np.float32)
        metadata.update(output_activation="sigmoid" if num_classes == 1 else "softmax")
        if stored_size is not None:
            metadata["input_size"] = list(stored_size)
        super().__init__(f"pixel-model-{id(self)}", metadata)

    def run(self, batch):
        self.shapes.append(batch.shape)
        return self.function(batch).astype(np.float32)


def noise(*shape):
    return RNG.uniform(0, 255, shape).astype(np.float32)


@pytest.mark.parametrize("overlap", [True, 0.0, 0.5])
def test_tiled_prediction_equals_the_whole_image_result_no_seams(overlap):
    runner = PixelRunner()
    images = noise(2, 100, 75, 3)
    tiled = runner.predict(images, tile=overlap)
    assert tiled.shape == (2, 100, 75, 1) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, pixel_probabilities(images), rtol=1e-6, atol=1e-7)
    masks = runner.predict_masks(images, tile=overlap, threshold=0.5)
    np.testing.assert_array_equal(masks, pixel_probabilities(images)[..., 0] >= 0.5)
    assert all(shape[1:3] == (16, 16) for shape in runner.shapes)  # every tile at model size


def test_multiclass_masks_take_the_argmax_of_the_blended_probabilities():
    runner = PixelRunner(pixel_classes, input_size=(16, 24), num_classes=3)
    images = noise(1, 61, 90, 3)
    masks = runner.predict_masks(images, tile=0.3)
    np.testing.assert_array_equal(masks[0], np.argmax(images[0], axis=-1))
    assert masks.dtype == np.uint8


def test_uint8_input_models_get_quantized_tiles():
    runner = PixelRunner(input_dtype=np.uint8)
    images = noise(1, 40, 40, 3).round().astype(np.uint8)
    tiled = runner.predict(images, tile=True)
    np.testing.assert_allclose(tiled, pixel_probabilities(images), rtol=1e-6, atol=1e-7)


def test_tiles_of_all_images_are_batched_and_each_image_keeps_its_size():
    runner = PixelRunner()
    runner.predict_batch_size = 5
    images = [noise(40, 30, 3), noise(10, 70, 3), noise(16, 16, 3), noise(7, 5)]
    tiled = runner.predict(images, tile=True)
    assert [p.shape for p in tiled] == [(40, 30, 1), (10, 70, 1), (16, 16, 1), (7, 5, 1)]
    for image, p in zip(images, tiled):
        gray = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
        np.testing.assert_allclose(p, pixel_probabilities(gray), rtol=1e-6, atol=1e-7)
    tiles = sum(len(tile_boxes((max(i.shape[0], 16), max(i.shape[1], 16)), (16, 16))) for i in images)
    assert [s[0] for s in runner.shapes] == [5] * (tiles // 5) + ([tiles % 5] if tiles % 5 else [])


def test_an_image_smaller_than_a_tile_runs_at_native_resolution():
    runner = PixelRunner(input_size=(32, 32))
    image = noise(9, 50, 3)  # shorter than a tile: padded, not resized
    tiled = runner.predict(image, tile=True)
    np.testing.assert_allclose(tiled[0], pixel_probabilities(image), rtol=1e-6, atol=1e-7)
    resized = runner.predict(image)  # the default path resizes to 32x32 and back
    assert np.abs(resized[0] - pixel_probabilities(image)).max() > 0.05


def test_default_behaviour_is_unchanged_without_tile():
    runner = PixelRunner()
    images = noise(2, 64, 48, 3)
    plain = runner.predict(images)
    assert runner.shapes == [(2, 16, 16, 3)]  # one batch, resized to the model input
    np.testing.assert_array_equal(runner.predict(images, tile=None), plain)
    np.testing.assert_array_equal(runner.predict(images, tile=False), plain)


def test_any_size_models_need_a_tile_size():
    runner = PixelRunner(input_size=(None, None))
    image = noise(50, 70, 3)
    with pytest.raises(ValueError, match=r"takes any input size.*tile_size=\(H, W\).*--tile-size"):
        runner.predict(image, tile=True)
    tiled = runner.predict(image, tile=True, tile_size=(32, 32))
    np.testing.assert_allclose(tiled[0], pixel_probabilities(image), rtol=1e-6, atol=1e-7)
    assert {s[1:3] for s in runner.shapes} == {(32, 32)}
    stored = PixelRunner(input_size=(None, None), stored_size=(24, 24))
    assert stored.resolve_tile_size() == (24, 24)  # the metadata's size
    stored.predict(image, tile=True)
    assert {s[1:3] for s in stored.shapes} == {(24, 24)}


def test_bad_tile_arguments_say_what_to_pass():
    runner = PixelRunner()
    image = noise(20, 20, 3)
    with pytest.raises(ValueError, match=r"takes inputs of size \(16, 16\).*tile_size=\(32, 32\)"):
        runner.predict(image, tile=True, tile_size=(32, 32))
    assert runner.resolve_tile_size((16, 16)) == (16, 16)
    with pytest.raises(ValueError, match="`tile_size` is used only when tiling"):
        runner.predict(image, tile_size=(16, 16))
    with pytest.raises(ValueError, match="Received: tile=2"):
        runner.predict_masks(image, tile=2)
    with pytest.raises(ValueError, match="tile_size"):
        PixelRunner(input_size=(None, None)).predict(image, tile=True, tile_size=(0, 16))


# The CLI --------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    image = noise(70, 90, 3).round().astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "data" / "images" / "a.png")
    truth = (pixel_probabilities(image)[..., 0] >= 0.5).astype(np.uint8) * 255
    Image.fromarray(truth).save(tmp_path / "data" / "masks" / "a.png")
    (tmp_path / "model.onnx").write_bytes(b"stands in for a model")
    return tmp_path


def test_tile_flags_parse_and_refuse_bad_values(folder, capsys):
    from keras_unet.cli import build_parser

    base = ["predict", str(folder / "model.onnx"), "--images", str(folder / "data" / "images"),
            "--out", str(folder / "out")]
    parser = build_parser()
    assert parser.parse_args(base).tile is None
    assert parser.parse_args(base + ["--tile"]).tile == DEFAULT_OVERLAP
    assert parser.parse_args(base + ["--tile", "0.5"]).tile == 0.5
    assert parser.parse_args(base + ["--tile", "0", "--tile-size", "32", "48"]).tile_size == [32, 48]
    for bad, culprit in ((["--tile", "1"], "--tile"), (["--tile", "x"], "--tile"),
                         (["--tile", "--tile-size", "0"], "--tile-size"),
                         (["--tile", "--tile-size", "1", "2", "3"], "--tile-size")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(base + bad)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert culprit in err and len(err.strip().splitlines()) == 1, err
    for command in (base, ["evaluate", str(folder / "model.onnx"), "--data", str(folder / "data")]):
        assert cli.main(command + ["--tile-size", "32"]) == 2
        err = capsys.readouterr().err
        assert "--tile-size needs --tile" in err and len(err.strip().splitlines()) == 1, err


def test_predict_and_evaluate_tile_at_native_size(folder, monkeypatch, capsys):
    import keras_unet.runtime

    monkeypatch.setattr(keras_unet.runtime, "load_runner",
                        lambda path, threads=None, runtime=None: PixelRunner())
    out = folder / "out"
    assert cli.main(["predict", str(folder / "model.onnx"), "--images", str(folder / "data" / "images"),
                     "--out", str(out), "--tile", "0.5"]) == 0
    mask = np.asarray(Image.open(out / "a.png"))
    np.testing.assert_array_equal(mask, np.asarray(Image.open(folder / "data" / "masks" / "a.png")))
    report = folder / "scores.json"
    assert cli.main(["evaluate", str(folder / "model.onnx"), "--data", str(folder / "data"),
                     "--tile", "--json", str(report)]) == 0
    scores = json.loads(report.read_text())
    assert scores["iou"] == 1.0 and scores["tile_overlap"] == DEFAULT_OVERLAP
    assert scores["tile_size"] == [16, 16]
    assert cli.main(["evaluate", str(folder / "model.onnx"), "--data", str(folder / "data"), "--json",
                     str(report)]) == 0
    scores = json.loads(report.read_text())
    assert scores["iou"] < 1.0 and scores["tile_overlap"] is None  # resized: detail lost
    capsys.readouterr()
