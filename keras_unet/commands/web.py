"""Serve a page that segments images in the browser with an exported file.

The page runs a `.onnx` (or `.ort`) file with onnxruntime-web (WebAssembly, threads where the browser
allows) and a `.tflite` file with MediaPipe Tasks' ImageSegmenter. Drop an image on it (or
pick one, or start the camera): it draws the mask over the image and shows the latency of
the model call. Everything is served from 127.0.0.1 by this command; the runtimes' JS/Wasm
files come from the npm registry once, with `--install-assets`.

Example:
    keras-unet web --install-assets          # once per machine (needs npm)
    keras-unet web unet_int8.onnx --port 8000
"""

HELP = "serve a page that segments dropped images in the browser (onnxruntime-web / MediaPipe)"


def add_arguments(parser):
    from keras_unet.console.arguments import existing_file, int_in, positive_int

    parser.add_argument("model", nargs="?", type=existing_file, help="a .onnx, .ort or .tflite file exported by keras-unet")
    parser.add_argument("--port", type=int_in(0, 65535), default=0,
                        help="port on 127.0.0.1 (default: 0, a free port)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="onnxruntime-web threads (default: its own, half the cores and at most 4)")
    parser.add_argument("--install-assets", action="store_true",
                        help="fetch the pages' JS/Wasm files from the npm registry (once; needs npm)")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")


def run(args) -> int:
    from keras_unet.benchmarks.browser.assets import install_assets

    if args.install_assets:
        print(f"browser assets in {install_assets()}")
    if args.model is None:
        if args.install_assets:
            return 0
        raise ValueError("MODEL: give a .onnx or .tflite file to serve (or --install-assets)")
    from keras_unet.benchmarks.browser.page import page_server

    server = page_server(args.model, port=args.port, threads=args.threads)
    url = server.url("/")
    print(f"serving {args.model} at {url} (Ctrl-C stops)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    server.serve_forever()
    return 0
