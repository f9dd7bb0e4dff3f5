"""keras_unet.benchmarks.training: structure of the result with a tiny model and few steps."""

import json
import math

import pytest

from keras_unet.benchmarks import training


def seed_param_count(filters, depth, channels=3):
    """Parameters of the seed U-Net, counted layer by layer (3x3 convs, 2x2 transposed convs)."""
    conv = lambda c_in, c_out, k: k * k * c_in * c_out + c_out  # noqa: E731
    total, c_in = 0, channels
    for level in range(depth + 1):
        width = filters * 2**level
        total += conv(c_in, width, 3) + conv(width, width, 3)
        c_in = width
    for level in reversed(range(depth)):
        width = filters * 2**level
        total += conv(c_in, width, 2) + conv(2 * width, width, 3) + conv(width, width, 3)
        c_in = width
    return total + conv(c_in, 1, 1)


def test_seed_parameter_count_is_the_seed_tutorials():
    assert seed_param_count(64, 4) == 31_031_745  # the number the seed tutorial prints
    assert seed_param_count(4, 2) == 7469  # by hand, layer by layer


def test_seed_model_layers_at_a_small_size():
    model = training.seed_unet(input_shape=(32, 32, 3), filters=4, depth=2)
    assert model.count_params() == seed_param_count(4, 2)
    layer_types = [type(layer).__name__ for layer in model.layers]
    assert layer_types.count("MaxPooling2D") == 2
    assert layer_types.count("Conv2DTranspose") == 2
    assert layer_types.count("Conv2D") == 2 * 5 + 1
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert model.output_shape == (None, 32, 32, 1)


@pytest.mark.slow
def test_seed_model_matches_the_seed_architecture():
    model = training.seed_unet()
    assert model.count_params() == 31_031_745
    layer_types = [type(layer).__name__ for layer in model.layers]
    assert layer_types.count("MaxPooling2D") == 4
    assert layer_types.count("Conv2DTranspose") == 4
    assert layer_types.count("Conv2D") == 2 * 9 + 1
    assert model.layers[-1].activation.__name__ == "sigmoid"


@pytest.mark.slow
def test_tiny_benchmark_result_and_json(tmp_path):
    out = tmp_path / "bench" / "training.json"
    result = training.benchmark_training(image_size=(32, 32), channels=1, filters=4, depth=2,
                                         batch_size=4, steps=3, warmup=1, rounds=3,
                                         pipeline_batches=5, out=out, verbose=False)
    for name in ("unet", "seed"):
        row = result[name]
        assert row["runs"] == 3
        assert row["train_ips"] > 0 and row["latency_p50_ms"] > 0
        assert row["latency_min_ms"] <= row["latency_p50_ms"] <= row["latency_max_ms"]
    assert result["params"]["unet"] == result["params"]["seed"] > 0
    assert math.isclose(result["unet_vs_seed_ratio"],
                        result["unet"]["train_ips"] / result["seed"]["train_ips"])
    assert result["pipeline_ips"] > 0 and result["fit_ips"] > 0
    assert math.isclose(result["pipeline_headroom"],
                        result["pipeline_ips"] / result["unet"]["train_ips"])
    assert result["config"]["batch_size"] == 4 and result["environment"]["python"]
    written = json.loads(out.read_text())
    assert written["unet_vs_seed_ratio"] == pytest.approx(result["unet_vs_seed_ratio"])
    assert "UNet / seed" in training.format_summary(result)
    assert [p.name for p in out.parent.iterdir()] == ["training.json"]  # no temporary left


def test_too_few_pairs_for_a_batch(tmp_path):
    from PIL import Image
    import numpy as np

    for name in ("images", "masks"):
        (tmp_path / name).mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match="fewer than batch_size=4"):
        training.benchmark_training(data=tmp_path, image_size=(8, 8), filters=2, depth=1,
                                    batch_size=4, verbose=False)
