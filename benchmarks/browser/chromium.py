"""Headless Chromium, driven by Playwright.

Playwright (`pip install 'keras-unet-edge[browser]'`) drives the system's Chromium
(`executable_path`), so its own browser download is not needed. Why Playwright rather than a
hand-written DevTools-protocol client: it is maintained against every Chromium release and
already does what such a client would have to write and keep working (waiting for a page,
awaiting an async function's result, console and page errors, screenshots, timeouts).
"""

import os
import shutil
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["BrowserMissing", "find_chromium", "launch_chromium"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = ("install it with `apt-get install chromium` (Debian/Ubuntu) or point "
                "KERAS_UNET_CHROMIUM at a Chromium/Chrome executable")


class BrowserMissing(RuntimeError):
    """No Chromium, or no Playwright to drive it; the message says what to install."""


def find_chromium() -> str:
    """Path of the Chromium executable: `$KERAS_UNET_CHROMIUM`, else the first on PATH.

    Returns:
        The executable's path.

    Raises:
        BrowserMissing: none found; the message says how to install one.
    """
    chosen = os.environ.get("KERAS_UNET_CHROMIUM")
    if chosen:
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise BrowserMissing(f"KERAS_UNET_CHROMIUM={chosen}: not an executable file; {INSTALL_HINT}")
        return chosen
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserMissing(f"no Chromium found (looked for {', '.join(CANDIDATES)} on PATH); {INSTALL_HINT}")


def _chromium_args(extra) -> list:
    args = [*extra,
        # The software WebGL that MediaPipe's image conversions fall back to without a GPU.
        "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    return args


@contextmanager
def launch_chromium(executable=None, headless: bool = True, extra_args=()) -> Iterator[Any]:
    """Yields `(browser, version)`: a Playwright `Browser` on headless Chromium, and its version.

    Args:
        executable: the Chromium executable (default `find_chromium()`).
        headless: run without a window.
        extra_args: more Chromium switches (e.g. `--use-fake-device-for-media-stream`).

    Raises:
        BrowserMissing: Playwright is not installed, or Chromium is missing or does not start.
    """
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        raise BrowserMissing("the browser runtime needs Playwright: pip install "
                             "'keras-unet-edge[browser]'") from None
    executable = executable or find_chromium()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=headless,
                                                 args=_chromium_args(extra_args))
        except Error as error:
            first = str(error).strip().splitlines()[0]
            raise BrowserMissing(f"{executable}: Chromium did not start ({first}); {INSTALL_HINT}") from None
        try:
            yield browser, browser.version
        finally:
            browser.close()
