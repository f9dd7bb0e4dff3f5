"""Percentile activation ranges (`keras_unet.export.quantization.ranges`): what they clip,
what they keep, and the bad inputs."""

import numpy as np
import pytest

from keras_unet.export.quantization.ranges import RangeSampler


def _sampler(images, samples_per_image=100_000, seed=0):
    sampler = RangeSampler(samples_per_image=samples_per_image, seed=seed)
    for tensors in images:
        sampler.add(tensors)
    return sampler


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


def test_sampling_is_bounded_and_seeded():
    rng = np.random.default_rng(3)
    images = [{"big": rng.normal(size=(1, 128, 128, 16)).astype("float32")} for _ in range(3)]
    first = _sampler(images, samples_per_image=2048, seed=7)
    again = _sampler(images, samples_per_image=2048, seed=7)
    assert sum(chunk.size for chunk in first._samples["big"]) == 3 * 2048
    assert first.ranges() == again.ranges()
    assert first.min_max() == again.min_max()  # min and max are exact, not sampled
    assert first.min_max()["big"][1] == max(float(x["big"].max()) for x in images)


def test_integer_and_empty_tensors_are_skipped():
    sampler = _sampler([{"ids": np.arange(10), "empty": np.zeros((0,), "float32"),
                         "x": np.ones((2, 2), "float32")}])
    assert set(sampler.ranges()) == {"x"}


@pytest.mark.parametrize("percentile", [50.0, 100.5, -1])
def test_a_percentile_outside_50_to_100_is_refused(percentile):
    sampler = _sampler([{"x": np.ones((2, 2), "float32")}])
    with pytest.raises(ValueError, match=r"`percentile` must be in \(50, 100\]"):
        sampler.ranges(percentile)


def test_ranges_need_images():
    with pytest.raises(ValueError, match="No images were recorded"):
        RangeSampler().ranges()
