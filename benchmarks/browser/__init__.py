"""Exported files run in a web browser: onnxruntime-web (wasm) for `.onnx`, MediaPipe Tasks
for `.tflite`, in headless Chromium driven by Playwright, served from 127.0.0.1.

- `run_in_browser(paths, images, runs=...)`: latency measured in the page plus the
  probabilities and masks, per file (`runner.py`).
- `install_assets()` / `keras-unet web --install-assets`: the JS/Wasm files, from the npm
  registry, once (`assets.py`); `LocalServer` serves them (`server.py`); `launch_chromium`
  finds and starts the browser (`chromium.py`).
- `static/`: the benchmark page and the page `keras-unet web MODEL` opens.

Nothing here imports Playwright until a browser is launched.
"""

from keras_unet.benchmarks.browser.assets import AssetsMissing, assets_dir, check_assets, install_assets
from keras_unet.benchmarks.browser.chromium import BrowserMissing, find_chromium
from keras_unet.benchmarks.browser.runner import BrowserResult, run_in_browser
from keras_unet.benchmarks.browser.server import LocalServer, PortInUse

__all__ = ["AssetsMissing", "BrowserMissing", "BrowserResult", "LocalServer", "PortInUse",
           "assets_dir", "check_assets", "find_chromium", "install_assets", "run_in_browser"]
