"""Percentile activation ranges (`keras_unet.export.quantization.ranges`): exact
percentiles from the tails kept, what they clip, what they keep, and the bad inputs."""

import numpy as np
import pytest

from keras_unet.export.quantization.ranges import RangeSampler


def _sampler(images, **kwargs):
    sampler = RangeSampler(expected_images=kwargs.pop("expected_images", len(images)), **kwargs)
    for tensors in images:
        sampler.add(tensors)
    return sampler


@pytest.mark.parametrize("percentile", [99.9, 99.95, 99.99, 99.999, 100.0])
def test_percentiles_equal_numpys_over_all_values(percentile):
    rng = np.random.default_rng(0)
    images = [{"conv": rng.standard_t(3, size=(1, 48, 48, 8)).astype("float32")} for _ in range(7)]
    low, high = _sampler(images).ranges(percentile)["conv"]
    values = np.concatenate([x["conv"].ravel() for x in images])
    assert high == pytest.approx(float(np.percentile(values, percentile)), rel=1e-6)
    assert low == pytest.approx(float(np.percentile(values, 100 - percentile)), rel=1e-6)


def test_a_rare_outlier_is_clipped_and_the_bulk_kept():
    rng = np.random.default_rng(1)
    images = [{"conv": rng.normal(size=(1, 64, 64, 4)).astype("float32")} for _ in range(10)]
    images[3]["conv"][0, 0, 0, 0] = 1000.0  # 1 value in 163,840
    sampler = _sampler(images)
    assert sampler.min_max()["conv"][1] == 1000.0
    low, high = sampler.ranges(99.99)["conv"]
    assert 3.0 < high < 5.0 and -5.0 < low < -3.0
    wide_low, wide_high = sampler.ranges(99.9)["conv"]
    assert low < wide_low < 0 < wide_high < high  # a lower percentile clips more


def test_ranges_contain_zero_and_stay_within_min_and_max():
    rng = np.random.default_rng(2)
    relu = [{"relu": np.abs(rng.normal(size=(1, 32, 32, 2))).astype("float32") + 1.0} for _ in range(4)]
    negative = [{"neg": -np.abs(rng.normal(size=(1, 32, 32, 2))).astype("float32") - 1.0} for _ in range(4)]
    constant = [{"flat": np.full((1, 8, 8, 1), 2.5, "float32")} for _ in range(4)]
    ranges = {}
    for images in (relu, negative, constant):
        sampler = _sampler(images)
        ranges.update(sampler.ranges(99.99))
        for name, (low, high) in sampler.ranges(99.99).items():
            true_low, true_high = sampler.min_max()[name]
            assert min(0.0, true_low) <= low <= 0.0 <= high <= max(0.0, true_high)
    assert ranges["relu"][0] == 0.0 and ranges["neg"][1] == 0.0  # zero stays representable
    assert ranges["flat"] == (0.0, 2.5)


def test_memory_is_a_tail_not_every_value():
    rng = np.random.default_rng(3)
    images = [{"big": rng.normal(size=(1, 128, 128, 16)).astype("float32")} for _ in range(5)]
    sampler = _sampler(images)
    assert sampler._top["big"].size < 0.002 * 5 * images[0]["big"].size
    assert sampler.min_max()["big"][1] == max(float(x["big"].max()) for x in images)


def test_more_images_than_expected_still_give_a_range_inside_min_max():
    rng = np.random.default_rng(4)
    images = [{"x": rng.normal(size=(1, 16, 16, 1)).astype("float32")} for _ in range(20)]
    low, high = _sampler(images, expected_images=2).ranges(99.9)["x"]
    true_low, true_high = _sampler(images).min_max()["x"]
    assert true_low <= low < 0 < high <= true_high


def test_integer_and_empty_tensors_are_skipped():
    sampler = _sampler([{"ids": np.arange(10), "empty": np.zeros((0,), "float32"),
                         "x": np.ones((2, 2), "float32")}])
    assert set(sampler.ranges()) == {"x"}


@pytest.mark.parametrize("percentile", [99.0, 100.5, -1])
def test_a_percentile_below_the_tails_kept_or_above_100_is_refused(percentile):
    sampler = _sampler([{"x": np.ones((2, 2), "float32")}])
    with pytest.raises(ValueError, match=r"`percentile` must be in \[99\.9, 100\]"):
        sampler.ranges(percentile)


def test_ranges_need_images_and_a_sensible_lowest_percentile():
    with pytest.raises(ValueError, match="No images were recorded"):
        RangeSampler().ranges()
    with pytest.raises(ValueError, match="`lowest_percentile` must be in"):
        RangeSampler(lowest_percentile=10)


def test_min_max_overrides_give_every_tensor_its_full_range_and_the_size_per_image():
    from keras_unet.export.quantization.onnx_ranges import bytes_per_image, min_max_overrides

    sampler = RangeSampler(expected_images=2)
    sampler.add({"a": np.array([-1.0, 2.0, 0.5], np.float32), "b": np.zeros((2, 5), np.float32)})
    sampler.add({"a": np.array([3.0, 0.0, 1.0], np.float32), "b": np.ones((2, 5), np.float32)})
    overrides = min_max_overrides(sampler)
    assert [(float(o[0]["rmin"]), float(o[0]["rmax"])) for o in overrides.values()] == [(-1.0, 3.0), (0.0, 1.0)]
    assert overrides["a"][0]["rmin"].dtype == np.float32
    assert bytes_per_image(sampler) == 4 * (3 + 10)


def test_entropy_calibration_is_judged_by_the_memory_it_would_hold(monkeypatch):
    import os
    import types

    from keras_unet.export import onnx_calibration

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    sampler = RangeSampler(expected_images=1)
    sampler.add({"big": np.zeros(1000, np.float32)})  # 4 kB per image
    monkeypatch.setattr(onnx_calibration, "activation_sampler", lambda *args: sampler)
    fits = int(0.25 * memory // 4000)
    assert onnx_calibration.entropy_fits(types.SimpleNamespace(calibration=range(fits)), "p.onnx", 17)
    assert not onnx_calibration.entropy_fits(types.SimpleNamespace(calibration=range(fits + 10)),
                                             "p.onnx", 17)
