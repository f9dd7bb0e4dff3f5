"""What the browser runtime needs before a page opens, and its one-line errors when it is
missing: the local server (headers, routes, a port in use), the assets (never a CDN), and
Chromium. No browser starts here (fast lane)."""

import json
import re
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest

from keras_unet.benchmarks.browser.assets import ASSETS, INSTALL_COMMAND, AssetsMissing, check_assets
from keras_unet.benchmarks.browser.chromium import BrowserMissing, find_chromium
from keras_unet.benchmarks.browser.server import STATIC_DIR, LocalServer, PortInUse


@pytest.fixture()
def busy_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken.getsockname()[1]


@pytest.fixture()
def fake_assets(tmp_path):
    """An assets folder with every file the pages load (empty: only their presence is read)."""
    for asset in ASSETS:
        for name in asset.served:
            (tmp_path / asset.folder / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / asset.folder / name).write_bytes(b"")
    return tmp_path


def test_the_server_is_cross_origin_isolated_and_serves_only_its_routes(tmp_path):
    (tmp_path / "module.mjs").write_text("export const x = 1;")
    (tmp_path.parent / "secret.txt").write_text("not served")
    with LocalServer({"/assets/": tmp_path, "/": STATIC_DIR}, {"/config.json": b'{"a": 1}'}) as server:
        with urllib.request.urlopen(server.url("/assets/module.mjs")) as response:
            assert response.headers["Content-Type"] == "text/javascript"
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with urllib.request.urlopen(server.url("/config.json")) as response:
            assert json.load(response) == {"a": 1}
        with urllib.request.urlopen(server.url("/bench.html")) as response:
            assert response.headers["Content-Type"].startswith("text/html")
        for path in ("/assets/../secret.txt", "/assets/%2e%2e/secret.txt", "/nothing.js"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(server.url(path))
            assert refused.value.code == 404
    assert server.url().startswith("http://127.0.0.1:")


def test_a_port_in_use_is_one_line_naming_it(busy_port):
    with pytest.raises(PortInUse, match=rf"^--port {busy_port}: 127.0.0.1:{busy_port} is already in use"):
        LocalServer({}, {}, port=busy_port)


def test_missing_assets_name_the_install_command(tmp_path):
    with pytest.raises(AssetsMissing) as missing:
        check_assets(tmp_path)
    assert INSTALL_COMMAND in str(missing.value) and "\n" not in str(missing.value)
    assert str(tmp_path) in str(missing.value)


def test_the_pages_load_nothing_from_outside_the_server():
    loaded = []
    for page in STATIC_DIR.iterdir():
        text = page.read_text()
        assert "http://" not in text and "https://" not in text, page.name
        loaded += re.findall(r'(?:from|import\(|src=|fetch\(|forVisionTasks\()\s*"([^"]+)"', text)
    assert "/assets/ort/ort.wasm.min.mjs" in loaded and "/app.mjs" in loaded
    assert all(url.startswith("/") and not url.startswith("//") for url in loaded), loaded


def test_no_chromium_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_UNET_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserMissing, match=r"^no Chromium found .*apt-get install chromium"):
        find_chromium()
    monkeypatch.setenv("KERAS_UNET_CHROMIUM", str(tmp_path / "chrome"))
    with pytest.raises(BrowserMissing, match=r"KERAS_UNET_CHROMIUM=.*chrome: not an executable file"):
        find_chromium()


def test_run_in_browser_checks_set_up_before_any_file(tmp_path, fake_assets, monkeypatch):
    from keras_unet.benchmarks.browser import run_in_browser

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    images = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"m.pb: the browser runtime runs .onnx/.ort .* and .tflite"):
        run_in_browser([tmp_path / "m.pb"], images)
    with pytest.raises(AssetsMissing, match=INSTALL_COMMAND):
        run_in_browser([model], images, assets=tmp_path / "empty")
    monkeypatch.delenv("KERAS_UNET_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserMissing, match="apt-get install chromium"):
        run_in_browser([model], images, assets=fake_assets)


def _tiny_onnx(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["mean"], axes=[3], keepdims=1),
         helper.make_node("Sigmoid", ["mean"], ["probabilities"])], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 8, 8, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.filterwarnings("ignore:.*no keras_unet metadata")
def test_web_command_bad_input_is_one_line(tmp_path, fake_assets, busy_port, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from keras_unet import cli

    model = str(_tiny_onnx(tmp_path / "tiny.onnx"))
    assert cli.main(["web"]) == 2
    assert "MODEL: give a .onnx or .tflite file" in capsys.readouterr().err
    monkeypatch.setenv("KERAS_UNET_WEB_ASSETS", str(tmp_path / "no_assets"))
    assert cli.main(["web", model]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and INSTALL_COMMAND in err
    monkeypatch.setenv("KERAS_UNET_WEB_ASSETS", str(fake_assets))
    assert cli.main(["web", model, "--port", str(busy_port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any no-metadata warning
    assert err == (f"keras-unet web: error: --port {busy_port}: 127.0.0.1:{busy_port} is already in use; "
                   "pick another port or leave it out for a free one")


@pytest.mark.filterwarnings("ignore:.*no keras_unet metadata")
def test_the_page_config_describes_an_onnx_file(tmp_path):
    pytest.importorskip("onnxruntime")
    from keras_unet.benchmarks.browser.page import page_config

    config = page_config(_tiny_onnx(tmp_path / "tiny.onnx"), threads=2)
    assert config["kind"] == "onnx" and config["model"] == "/models/model.onnx"
    assert config["input_size"] == [8, 8] and config["channels"] == 3
    assert config["input_dtype"] == "float32" and config["input_quantization"] is None
    assert config["num_classes"] == 1 and config["threshold"] == 0.5
    assert json.loads(json.dumps(config)) == config
