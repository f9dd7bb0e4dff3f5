"""keras_unet.data: the tf.data pipeline, the numpy iterator, Augment and bad input.

The pipeline reads pixels with the runtime's pillow reader only, so its elements must equal
`imageio.load_dataset_arrays` exactly, at the native size and resized.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from keras_unet.runtime import imageio
from keras_unet import data
from keras_unet.datasets import nuclei_path

REPO = Path(__file__).resolve().parents[2]


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _make_set(root, count=6, size=(20, 24), image_ext=".png", classes=None, gray=False):
    """Random images; masks 0/255, or class indices 0..classes-1 when `classes`."""
    rng = np.random.default_rng(len(str(root)))
    for i in range(count):
        shape = size if gray else size + (3,)
        _save(root / "images" / f"im{i:02d}{image_ext}", rng.integers(0, 256, shape, dtype=np.uint8))
        if classes:
            mask = rng.integers(0, classes, size).astype(np.uint8)
        else:
            mask = (rng.random(size) > 0.5).astype(np.uint8) * 255
        _save(root / "masks" / f"im{i:02d}.png", mask)
    return root


def _all(dataset):
    images, masks = [], []
    for x, y in dataset:
        images.append(x.numpy())
        masks.append(y.numpy())
    return np.concatenate(images), np.concatenate(masks)


def _tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_shipped_nuclei_split_and_element_convention():
    folder = nuclei_path()
    pairs = imageio.list_pairs(folder)
    assert len(pairs) >= 150
    assert (folder / "LICENSE.txt").read_text().count("CC0") >= 1
    train, val = data.load_dataset(folder, image_size=(64, 64), channels=1, batch_size=16,
                                   validation_split=0.2, seed=3)
    x, y = _all(train)
    vx, vy = _all(val)
    assert len(x) + len(vx) == len(pairs) and len(vx) == round(0.2 * len(pairs))
    assert x.shape[1:] == (64, 64, 1) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 100
    assert y.shape[1:] == (64, 64, 1) and y.dtype == np.float32
    assert set(np.unique(y)) == {0.0, 1.0}
    train_pairs, val_pairs = data.split_pairs(pairs, 0.2, seed=3)
    assert not set(train_pairs) & set(val_pairs)
    assert data.split_pairs(pairs, 0.2, seed=3) == (train_pairs, val_pairs)


def test_tf_pipeline_matches_numpy_reader():
    """One reader: the pipeline's pixels are imageio's, exactly, resized or not."""
    pairs = imageio.list_pairs(nuclei_path())[:24]
    # native 128x128 gray, gray -> RGB, shrunk (antialiased) and enlarged
    for channels, size in ((1, (128, 128)), (3, (128, 128)), (3, (48, 80)), (1, (256, 192))):
        x, y = _all(data.load_dataset(pairs, image_size=size, channels=channels, shuffle=False,
                                      batch_size=16))
        ref_x, ref_y = imageio.load_dataset_arrays(pairs, size, channels)
        assert ref_x.shape[1:3] == size
        np.testing.assert_array_equal(x, ref_x.astype(np.float32))
        np.testing.assert_array_equal(y[..., 0], ref_y)


def test_pipeline_reads_every_pair_through_the_runtime_reader(monkeypatch):
    """No second decoder: each pair is read once by imageio.read_pair, in a fixed order."""
    pairs = imageio.list_pairs(nuclei_path())[:24]
    read = []
    original = imageio.read_pair

    def counting_read_pair(image_path, mask_path, *args, **kwargs):
        read.append(Path(image_path).name)
        return original(image_path, mask_path, *args, **kwargs)

    monkeypatch.setattr(imageio, "read_pair", counting_read_pair)
    runs = []
    for _ in range(2):
        dataset = data.load_dataset(pairs, image_size=(32, 32), channels=3, batch_size=8,
                                    shuffle=True, seed=7)
        runs.append([_all(dataset) for _ in range(2)])  # two epochs: the second from the cache
    assert sorted(read) == sorted(2 * [p[0].name for p in pairs])  # once per pair and pipeline
    (a1, a2), (b1, b2) = runs
    for first, second in zip(a1 + a2, b1 + b2):
        np.testing.assert_array_equal(first, second)  # same seed, same batches
    assert not np.array_equal(a1[0], a2[0])  # reshuffled each epoch
    assert sorted(map(bytes, a1[0].astype(np.uint8))) == sorted(map(bytes, a2[0].astype(np.uint8)))


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".jpg"])
def test_other_formats_and_gray_to_rgb(tmp_path, ext):
    _make_set(tmp_path, count=3, image_ext=ext, gray=True)
    x, y = _all(data.load_dataset(tmp_path, image_size=(16, 16), channels=3, shuffle=False))
    ref_x, ref_y = imageio.load_dataset_arrays(tmp_path, (16, 16), 3)
    assert x.shape == (3, 16, 16, 3)
    assert np.array_equal(x[..., 0], x[..., 2])
    np.testing.assert_array_equal(x, ref_x.astype(np.float32))
    np.testing.assert_array_equal(y[..., 0], ref_y)


def test_multiclass_ignore_index_pad_and_sample_weights(tmp_path):
    _make_set(tmp_path, count=4, size=(10, 12), classes=5)
    dataset = data.load_dataset(tmp_path, image_size=(16, 16), num_classes=5, ignore_index=255,
                                resize_mode="pad", shuffle=False, batch_size=4)
    x, y = _all(dataset)
    assert y.dtype == np.int32 and set(np.unique(y)) == {0, 1, 2, 3, 4, 255}
    assert (y[:, :3] == 255).all() and (y[:, 3:13, 2:14] != 255).all()
    assert (x[:, :3] == 0).all()
    weighted = data.load_dataset(tmp_path, image_size=(16, 16), num_classes=5, ignore_index=255,
                                 resize_mode="pad", shuffle=False, batch_size=4,
                                 sample_weights=True)
    wx, wy, w = next(iter(weighted))
    assert np.array_equal(w.numpy(), (y[..., 0] != 255).astype(np.float32))
    assert set(np.unique(wy.numpy())) == {0, 1, 2, 3, 4}


def test_validation_folder_and_trimap(tmp_path):
    for name in ("train", "val"):
        _make_set(tmp_path / name, count=3, size=(8, 8), classes=3)
        for mask in (tmp_path / name / "masks").iterdir():  # trimap values 1, 2, 3
            raw = np.asarray(Image.open(mask)) + 1
            Image.fromarray(raw.astype(np.uint8)).save(mask)
    train, val = data.load_dataset(tmp_path / "train", image_size=(8, 8), num_classes=2,
                                   mask_encoding="trimap", ignore_index=9,
                                   validation_data=tmp_path / "val", shuffle=False)
    _, y = _all(train)
    _, vy = _all(val)
    raw = np.stack([np.asarray(Image.open(m)) for _, m in imageio.list_pairs(tmp_path / "train")])
    expected = np.select([raw == 1, raw == 2, raw == 3], [1, 0, 9])
    np.testing.assert_array_equal(y[..., 0], expected)
    assert len(vy) == 3
    with pytest.raises(ValueError, match="either `validation_split` or `validation_data`"):
        data.load_dataset(tmp_path / "train", validation_split=0.5, validation_data=tmp_path / "val")


def test_augment_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    blocks = (rng.random((4, 4, 4)) > 0.6).astype(np.float32)
    masks = np.kron(blocks, np.ones((8, 8), np.float32))[..., None]
    masks[:, :8, :16] = 1.0  # an asymmetric block, so every flip is visible
    images = np.repeat(masks * 255.0, 3, axis=-1)
    flips = data.Augment(rotation=0, zoom=0, brightness=0, contrast=0, seed=1)
    out_images, out_masks = (np.asarray(t) for t in flips(images, masks))
    np.testing.assert_array_equal(out_images[..., :1] / 255.0, out_masks)
    assert not np.array_equal(out_masks, masks)
    moved = data.Augment(flip=None, rotation=0.1, zoom=0.2, brightness=0, contrast=0, seed=2)
    out_images, out_masks = (np.asarray(t) for t in moved(images, masks))
    assert set(np.unique(out_masks)) <= {0.0, 1.0}
    agreement = np.mean((out_images[..., 0] > 127.5) == (out_masks[..., 0] > 0.5))
    assert agreement > 0.97
    assert np.mean((out_masks > 0.5) == (masks > 0.5)) < agreement  # it did move


def test_augmented_pipeline_is_deterministic_with_a_seed():
    folder = imageio.list_pairs(nuclei_path())[:48]
    runs = []
    for _ in range(2):
        train = data.load_dataset(folder, image_size=(32, 32), channels=1, batch_size=8,
                                  augment=True, seed=5)
        batches = iter(train)
        runs.append([next(batches) for _ in range(3)])
    for (x1, y1), (x2, y2) in zip(*runs):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
        assert set(np.unique(y1.numpy())) <= {0.0, 1.0}
    plain = next(iter(data.load_dataset(folder, image_size=(32, 32), channels=1, batch_size=8,
                                        seed=5)))
    assert not np.array_equal(plain[0].numpy(), runs[0][0][0].numpy())


def test_iterate_batches_numpy_only(tmp_path):
    _make_set(tmp_path, count=5, size=(12, 12), classes=3)
    batches = list(data.iterate_batches(tmp_path, image_size=(8, 8), num_classes=3, batch_size=2,
                                        seed=0, epochs=2))
    assert [len(b[0]) for b in batches] == [2, 2, 1, 2, 2, 1]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (2, 8, 8, 3)
    assert y.dtype == np.int32 and y.shape == (2, 8, 8, 1)
    ref_x, _ = imageio.load_dataset_arrays(tmp_path, (8, 8), 3)
    epoch = np.concatenate([b[0] for b in batches[:3]])
    assert sorted(map(bytes, epoch.astype(np.uint8))) == sorted(map(bytes, ref_x))
    again = list(data.iterate_batches(tmp_path, image_size=(8, 8), num_classes=3, batch_size=2,
                                      seed=0, epochs=2))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))


def test_bad_input_names_the_file_and_changes_nothing(tmp_path):
    root = _make_set(tmp_path / "d", count=3, size=(8, 8))
    _save(root / "masks" / "im01.png", np.array([[0, 7, 255, 0]] * 8, np.uint8).repeat(2, 1))
    with pytest.raises(ValueError, match=r"im01\.png.*bad: \[7\]"):
        data.load_dataset(root, image_size=(8, 8))
    _save(root / "masks" / "im01.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match=r"im01\.png.*8x6.*8x8"):
        data.load_dataset(root, image_size=(8, 8))
    _save(root / "masks" / "im01.png", np.full((8, 8), 4, np.uint8))
    with pytest.raises(ValueError, match=r"im01\.png.*class index 4.*num_classes=3"):
        data.load_dataset(root, image_size=(8, 8), num_classes=3)
    (root / "masks" / "im01.png").unlink()
    with pytest.raises(ValueError, match=r"no matching mask.*im01\.png"):
        data.load_dataset(root)
    _save(root / "masks" / "im01.png", np.zeros((8, 8), np.uint8))
    image = root / "images" / "im02.png"
    _save(image, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    _save(root / "masks" / "im02.png", np.zeros((64, 64), np.uint8))
    image.write_bytes(image.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"im02\.png"):
        data.load_dataset(root)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(ValueError, match="empty"):
        data.load_dataset(empty)
    with pytest.raises(ValueError, match="channels"):
        data.load_dataset(root, channels=2)
    assert sorted(p.name for p in (root / "images").iterdir()) == ["im00.png", "im01.png", "im02.png"]
    untouched = tmp_path / "untouched"
    _make_set(untouched, count=2, size=(8, 8))
    digest = _tree_digest(untouched)
    _all(data.load_dataset(untouched, image_size=(8, 8), cache=str(tmp_path / "cache")))
    assert _tree_digest(untouched) == digest


@pytest.mark.slow
def test_jax_backend_tf_data_and_iterator():
    code = (
        "import numpy as np\n"
        "from keras_unet import data\n"
        "from keras_unet.datasets import nuclei_path\n"
        "ds = data.load_dataset(nuclei_path(), image_size=(32, 32), channels=1, augment=True, seed=0)\n"
        "x, y = next(iter(ds))\n"
        "assert x.shape == (8, 32, 32, 1) and set(np.unique(y.numpy())) <= {0.0, 1.0}\n"
        "it = data.iterate_batches(nuclei_path(), (32, 32), 1, batch_size=4, augment=data.Augment(seed=0))\n"
        "x, y = next(it)\n"
        "assert isinstance(x, np.ndarray) and set(np.unique(y)) <= {0.0, 1.0}\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
