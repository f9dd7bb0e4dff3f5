"""The JavaScript and WebAssembly files the browser pages load, fetched once from the npm registry.

The pages never reach a CDN: every script and `.wasm` file is served from a local folder
(`assets_dir()`: `$KERAS_UNET_WEB_ASSETS`, else `$XDG_CACHE_HOME/keras-unet/web`, else
`~/.cache/keras-unet/web`). `install_assets()` fills it with `npm pack` (the registry's tarball,
checked against its published sha512 by npm; no dependencies, no install scripts) and keeps
only the files the pages load, about 28 MB: too large to ship in the wheel.

Set-up, once per machine (needs `npm`):

    keras-unet web --install-assets

| package | version | licence | files kept |
|---|---|---|---|
| onnxruntime-web | 1.31.1 | MIT | ort.wasm.min.mjs, ort-wasm-simd-threaded.{mjs,wasm} |
| @mediapipe/tasks-vision | 1.1.0 | Apache-2.0 | vision_bundle.mjs, wasm/vision_wasm_internal.{js,wasm} |
"""

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ASSETS", "INSTALL_COMMAND", "AssetsMissing", "assets_dir", "check_assets", "install_assets"]

INSTALL_COMMAND = "keras-unet web --install-assets"


@dataclass(frozen=True)
class NpmAsset:
    """One npm package the pages load: where it is served and which of its files are kept."""

    route: str  # served at /assets/<route>/
    package: str
    version: str
    license: str
    files: tuple  # paths inside the tarball's package/ folder
    strip: str = ""  # a leading folder left out where they are served

    @property
    def served(self) -> tuple:
        """The files' paths under `/assets/<route>/` (and in the assets folder)."""
        return tuple(name[len(self.strip):] if name.startswith(self.strip) else name
                     for name in self.files)

    @property
    def folder(self) -> str:
        return f"{self.package.replace('@', '').replace('/', '-')}-{self.version}"


ASSETS = (
    NpmAsset("ort", "onnxruntime-web", "1.31.1", "MIT",
             ("dist/ort.wasm.min.mjs", "dist/ort-wasm-simd-threaded.mjs",
              "dist/ort-wasm-simd-threaded.wasm"), strip="dist/"),
    NpmAsset("mediapipe", "@mediapipe/tasks-vision", "1.1.0", "Apache-2.0",
             ("vision_bundle.mjs", "wasm/vision_wasm_internal.js",
              "wasm/vision_wasm_internal.wasm")),
)


class AssetsMissing(RuntimeError):
    """The pages' JS/Wasm files are not installed; the message names the command."""


def assets_dir() -> Path:
    """The folder the assets live in (created by `install_assets`, not by this function)."""
    if os.environ.get("KERAS_UNET_WEB_ASSETS"):
        return Path(os.environ["KERAS_UNET_WEB_ASSETS"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "keras-unet" / "web"


def check_assets(root=None) -> dict:
    """`{route: folder}` for every asset package, or `AssetsMissing` naming the set-up command.

    Args:
        root: the assets folder (default `assets_dir()`).

    Returns:
        The folder served under `/assets/<route>/`, by route.
    """
    root = Path(root) if root is not None else assets_dir()
    folders = {}
    for asset in ASSETS:
        folder = root / asset.folder
        missing = [name for name in asset.served if not (folder / name).is_file()]
        if missing:
            raise AssetsMissing(
                f"{folder / missing[0]}: the browser assets ({asset.package} {asset.version}) are not "
                f"installed; run `{INSTALL_COMMAND}` once (it needs npm and the npm registry)")
        folders[asset.route] = folder
    return folders


def _npm_pack(asset, into) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise AssetsMissing("npm not found: the browser assets come from the npm registry; install "
                            "Node.js (apt-get install nodejs npm) and run "
                            f"`{INSTALL_COMMAND}` again")
    done = subprocess.run([npm, "pack", f"{asset.package}@{asset.version}", "--json",
                           "--pack-destination", str(into)],
                          capture_output=True, text=True, cwd=into)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssetsMissing(f"npm pack {asset.package}@{asset.version} failed: {last}")
    return Path(into) / json.loads(done.stdout)[0]["filename"]


def install_assets(root=None, force: bool = False) -> Path:
    """Fetches the pages' JS/Wasm files from the npm registry into `root` (once).

    Each package is unpacked into a temporary folder beside its final place and renamed
    into place, so an interrupted install leaves nothing half-written.

    Args:
        root: the assets folder (default `assets_dir()`).
        force: fetch again even when the files are there.

    Returns:
        The assets folder.

    Example:
    ```python
    from keras_unet.benchmarks.browser.assets import install_assets

    install_assets()  # ~28 MB into ~/.cache/keras-unet/web
    ```
    """
    root = Path(root) if root is not None else assets_dir()
    root.mkdir(parents=True, exist_ok=True)
    for asset in ASSETS:
        final = root / asset.folder
        if final.is_dir() and not force and all((final / f).is_file() for f in asset.served):
            continue
        with tempfile.TemporaryDirectory(dir=root, prefix=".install-") as work:
            tarball = _npm_pack(asset, work)
            staged = Path(work) / "staged"
            with tarfile.open(tarball) as archive:
                for name, served in zip(asset.files, asset.served):
                    member = archive.getmember(f"package/{name}")
                    target = staged / served
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.extractfile(member) as source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
            (staged / "SOURCE.txt").write_text(
                f"{asset.package} {asset.version} from the npm registry (npm pack); "
                f"licence: {asset.license}\n")
            if final.exists():
                shutil.rmtree(final)
            staged.rename(final)
    return root
