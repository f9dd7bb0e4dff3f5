"""The page `keras-unet web MODEL` serves, opened in headless Chromium: an image picked in its
file input is segmented in the page, the mask drawn over it and the latency shown. The mask
must agree with the Python runner's on the same image, and a screenshot is saved."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow

MIN_AGREEMENT = 0.99  # the page resizes with the canvas; at model size it copies the pixels


@pytest.mark.parametrize("name, backend", [("fp32_onnx", "onnxruntime-web/wasm"),
                                           ("int8_tflite", "mediapipe-tasks-vision/wasm")])
def test_the_page_segments_a_picked_image_and_draws_the_mask(browser_files, held_out_images,
                                                             tmp_path, name, backend):
    from PIL import Image

    from keras_unet.benchmarks.browser.chromium import launch_chromium
    from keras_unet.benchmarks.browser.page import page_server
    from keras_unet.runtime import load_runner

    images = held_out_images[:2].astype(np.uint8)
    with load_runner(browser_files[name]) as runner:
        expected = runner.predict_masks(images)
    with page_server(browser_files[name]) as server, launch_chromium() as (browser, _):
        page = browser.new_page(viewport={"width": 800, "height": 640})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url("/"))
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        assert backend in page.text_content("#model")
        for index, image in enumerate(images):
            picked = tmp_path / f"image{index}.png"
            Image.fromarray(image).save(picked)
            page.set_input_files("#file", str(picked))
            page.wait_for_function(f"document.getElementById('stats').textContent.includes('over {index + 1} call')")
            shape = page.evaluate("window.kerasUnetApp.lastMaskShape")
            mask = np.array(page.evaluate("window.kerasUnetApp.lastMask"), np.uint8).reshape(shape)
            assert 0.01 < expected[index].mean() < 0.99
            agreement = float(np.mean(mask == expected[index]))
            assert agreement >= MIN_AGREEMENT, (index, agreement)
        page.set_input_files("#file", str(picked))  # the same file again is segmented again
        page.wait_for_function("document.getElementById('stats').textContent.includes('over 3 call')")
        stats = page.text_content("#stats")
        assert "ms" in stats and "p50" in stats and page.text_content("#error") == ""
        screenshot = tmp_path / f"page_{name}.png"
        page.screenshot(path=str(screenshot))
    assert not errors, errors
    shot = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    # The nuclei images are gray; the overlay is the only red on the page.
    red = (shot[..., 0] - shot[..., 1] > 60) & (shot[..., 0] - shot[..., 2] > 60)
    assert red.sum() > 500, red.sum()


def test_the_page_segments_the_camera(browser_files):
    """Chromium's fake camera (a moving test pattern): frames are segmented one after another."""
    from keras_unet.benchmarks.browser.chromium import launch_chromium
    from keras_unet.benchmarks.browser.page import page_server

    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    with page_server(browser_files["int8_onnx"]) as server, \
            launch_chromium(extra_args=fake_camera) as (browser, _):
        page = browser.new_context(permissions=["camera"]).new_page()
        page.goto(server.url("/"))
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        page.click("#camera")
        page.wait_for_function("document.getElementById('stats').textContent.includes('over 5 call')")
        assert page.evaluate("window.kerasUnetApp.lastMaskShape") == [32, 32]
        assert page.text_content("#error") == ""
