"""keras_unet.runtime.imageio: EXIF orientation. Images (and masks) are read upright, as
viewers show them, by every reader (files, numpy batches, tf.data); TF-free except the
tf.data case."""

import numpy as np
import pytest
from image_files import asymmetric_pattern, save_image
from PIL import Image

from keras_unet.runtime import imageio
from keras_unet.runtime.images import exif_orientation


# EXIF orientation: images (and masks) are read upright, as viewers show them.


# What a viewer shows for stored pixels `a` under each EXIF orientation.
UPRIGHT = {
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _save_oriented(path, array, orientation, **options):
    """Save `array` as stored pixels with EXIF orientation `orientation`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif, **options)
    return path


def _blocks():
    """Flat 8x8 gray blocks (survive JPEG almost exactly), asymmetric: 24 wide, 16 high."""
    return np.kron(np.array([[0, 50, 100], [150, 200, 250]], np.uint8), np.ones((8, 8), np.uint8))


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_read_image_applies_exif_orientation_lossless(tmp_path, ext, orientation):
    stored = asymmetric_pattern()
    path = _save_oriented(tmp_path / f"o{orientation}{ext}", stored, orientation)
    image = imageio.read_image(path, channels=3)
    expected = UPRIGHT[orientation](stored)
    assert np.array_equal(image, expected)
    assert imageio.image_size(path) == image.shape[:2] == expected.shape[:2]
    assert exif_orientation(path) == orientation


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_read_image_applies_exif_orientation_jpeg(tmp_path, orientation):
    stored = _blocks()
    path = _save_oriented(tmp_path / f"o{orientation}.jpg", stored, orientation, quality=95)
    image = imageio.read_image(path, channels=1)[..., 0]
    expected = UPRIGHT[orientation](stored)
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).max() <= 8
    assert imageio.image_size(path) == image.shape[:2]
    assert imageio.read_image(path, channels=3).shape == expected.shape + (3,)


def test_image_without_or_with_upright_orientation_is_unchanged(tmp_path):
    stored = asymmetric_pattern()
    for name, orientation in (("plain.png", None), ("one.png", 1), ("bad.png", 9)):
        path = (save_image(tmp_path / name, stored) if orientation is None
                else _save_oriented(tmp_path / name, stored, orientation))
        assert np.array_equal(imageio.read_image(path), stored)
        assert imageio.image_size(path) == (4, 6)
        assert exif_orientation(path) == 1


def test_png_exif_after_pixel_data_is_seen_by_image_size(tmp_path):
    # PNG allows the eXIf chunk after IDAT; pillow sees it only when decoding, and the
    # header-only image_size must still agree with read_image.
    import struct
    import zlib

    stored = asymmetric_pattern()
    path = save_image(tmp_path / "late.png", stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    payload = exif.tobytes()[6:]  # without the "Exif\0\0" JPEG prefix
    chunk = (struct.pack(">I", len(payload)) + b"eXIf" + payload
             + struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF))
    data = path.read_bytes()
    end = data.rindex(b"IEND") - 4
    path.write_bytes(data[:end] + chunk + data[end:])
    with Image.open(path) as header:
        assert "exif" not in header.info  # really after the pixels
    image = imageio.read_image(path)
    assert np.array_equal(image, np.rot90(stored, -1))
    assert imageio.image_size(path) == image.shape[:2] == (6, 4)


def test_read_mask_with_exif_orientation_is_upright(tmp_path):
    stored = np.zeros((4, 6), np.uint8)
    stored[0, :2] = 255  # top-left corner: a rotation moves it
    path = _save_oriented(tmp_path / "m.png", stored, 6)
    assert np.array_equal(imageio.read_mask(path), np.rot90(stored, -1))
    index = np.arange(24, dtype=np.uint8).reshape(4, 6) % 5
    palette = Image.fromarray(index, "P")
    palette.putpalette([v for c in range(256) for v in (c * 40 % 256, c, 0)])
    exif = Image.Exif()
    exif[0x0112] = 8
    palette.save(tmp_path / "p.png", exif=exif)
    assert np.array_equal(imageio.read_mask(tmp_path / "p.png"), np.rot90(index, 1))
    plain = save_image(tmp_path / "plain.png", stored)  # the usual mask: no EXIF, read as stored
    assert np.array_equal(imageio.read_mask(plain), stored)


def _rotated_pair(root, mask_upright=True, stem="a"):
    """A JPEG stored 24x16 (WxH) with orientation 6 (shown 16x24) and its mask."""
    stored = _blocks()
    _save_oriented(root / "images" / f"{stem}.jpg", stored, 6, quality=95)
    mask = (stored >= 150).astype(np.uint8) * 255  # the bottom row of blocks, as stored
    save_image(root / "masks" / f"{stem}.png", np.rot90(mask, -1) if mask_upright else mask)
    return root / "images" / f"{stem}.jpg", root / "masks" / f"{stem}.png"


def test_upright_mask_lines_up_with_upright_image(tmp_path):
    image_path, mask_path = _rotated_pair(tmp_path)
    image, mask = imageio.read_pair(image_path, mask_path, channels=1)
    assert image.shape == (24, 16, 1) and mask.shape == (24, 16)
    assert np.array_equal(mask, (image[..., 0] >= 125).astype(np.int32))
    from keras_unet.data.pairs import check_pairs

    for check_images in (True, False):  # decoded, and header only (image_size)
        assert check_pairs([(image_path, mask_path)], check_images=check_images)


def test_mask_of_the_stored_pixels_is_refused_clearly(tmp_path):
    image_path, mask_path = _rotated_pair(tmp_path, mask_upright=False)
    with pytest.raises(ValueError, match=r"a\.png.*24x16.*a\.jpg.*16x24") as error:
        imageio.read_pair(image_path, mask_path)
    assert "\n" not in str(error.value)
    from keras_unet.data.pairs import check_pairs

    for check_images in (True, False):
        with pytest.raises(ValueError, match=r"a\.png.*24x16.*16x24"):
            check_pairs([(image_path, mask_path)], check_images=check_images)
    from keras_unet.runtime.masks import check_mask_size

    with pytest.raises(ValueError, match=r"24x16.*16x24.*EXIF orientation 6.*Rotate the mask"):
        check_mask_size((16, 24), (24, 16, 1), mask_path, image_path)
    with pytest.raises(ValueError, match=r"size\.$"):  # no EXIF: no hint
        check_mask_size((16, 24), (24, 16), mask_path, tmp_path / "masks" / "a.png")
    check_mask_size((24, 16), (24, 16, 3), mask_path, image_path)


def test_numpy_batches_read_upright_images(tmp_path):
    from keras_unet.data import iterate_batches

    _rotated_pair(tmp_path)
    images, masks = next(iterate_batches(tmp_path, image_size=(24, 16), channels=1,
                                         batch_size=1, shuffle=False))
    expected = np.rot90(_blocks(), -1)
    assert np.abs(images[0, ..., 0] - expected).max() <= 8
    assert np.array_equal(masks[0, ..., 0], (expected >= 150).astype(np.float32))


@pytest.mark.slow  # imports TensorFlow (several seconds)
def test_tf_data_pipeline_reads_upright_images(tmp_path):
    pytest.importorskip("tensorflow")
    from keras_unet.data import load_dataset

    _rotated_pair(tmp_path)
    dataset = load_dataset(tmp_path, image_size=(24, 16), channels=1, batch_size=1,
                           shuffle=False, cache=False)
    images, masks = next(iter(dataset))
    expected = np.rot90(_blocks(), -1)
    assert images.shape == (1, 24, 16, 1)
    assert np.abs(images.numpy()[0, ..., 0] - expected).max() <= 8
    assert np.array_equal(masks.numpy()[0, ..., 0], (expected >= 150).astype(np.float32))
