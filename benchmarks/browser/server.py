"""A local HTTP server for the browser pages: loopback only, cross-origin isolated.

Every response carries `Cross-Origin-Opener-Policy: same-origin` and
`Cross-Origin-Embedder-Policy: require-corp`, which make the page cross-origin isolated:
only then may WebAssembly use threads (SharedArrayBuffer), which onnxruntime-web's wasm
backend needs for more than one thread. Nothing is served that is not named in the routes.
"""

import errno
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["PortInUse", "LocalServer", "STATIC_DIR"]

STATIC_DIR = Path(__file__).with_name("static")
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
         ".html": "text/html; charset=utf-8", ".css": "text/css", ".json": "application/json",
         ".onnx": "application/octet-stream", ".tflite": "application/octet-stream"}


class PortInUse(ValueError):
    """The port asked for is taken (a bad option: exit 2); the message names it and the fix."""


def _safe_join(folder: Path, relative: str):
    target = (folder / relative).resolve()
    return target if target.is_relative_to(folder.resolve()) and target.is_file() else None


class LocalServer:
    """Serves folders and single files on 127.0.0.1 from a background thread.

    Args:
        folders: `{url prefix: folder}`, e.g. `{"/assets/ort/": Path(...)}`.
        files: `{url path: file or bytes}` (model files, a page's JSON configuration).
        port: 0 picks a free port.

    Example:
    ```python
    with LocalServer({"/": STATIC_DIR}, {"/config.json": b"{}"}) as server:
        print(server.url("/app.html"))
    ```
    """

    def __init__(self, folders: dict, files: dict, port: int = 0) -> None:
        self.folders = {prefix: Path(folder) for prefix, folder in folders.items()}
        self.files = dict(files)
        handler = self._handler()
        try:
            self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUse(f"--port {port}: 127.0.0.1:{port} is already in use; pick another "
                                "port or leave it out for a free one") from None
            raise
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        """Serves in the calling thread until interrupted (the `web` command)."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def _resolve(self, path):
        if path in self.files:
            return self.files[path]
        for prefix, folder in sorted(self.folders.items(), key=lambda item: -len(item[0])):
            if path.startswith(prefix):
                return _safe_join(folder, path[len(prefix):] or "index.html")
        return None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = unquote(urlsplit(self.path).path)
                found = server._resolve(path)
                if found is None:
                    self.send_error(404, f"not served: {path}")
                    return
                body = found if isinstance(found, bytes) else Path(found).read_bytes()
                named = path if isinstance(found, bytes) else str(found)  # "/" serves app.html
                kind = TYPES.get(Path(named).suffix) or mimetypes.guess_type(named)[0]
                self.send_response(200)
                self.send_header("Content-Type", kind or "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.send_header("Cross-Origin-Resource-Policy", "same-origin")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet: the benchmark prints its own table
                pass

        return Handler
