"""Tiles for images larger than a model's input: where they go, and how they blend back.

One job, in numpy only: cover an image with overlapping tiles of the model's input size,
and put the tiles' probabilities back together without seams. `keras_unet.runtime.base.Runner`
uses it for `predict(images, tile=...)`: each tile runs through the model at native
resolution instead of the whole image being squeezed to the input size.

- `tile_overlap(tile)`: the `tile` argument (`True`, an overlap fraction in [0, 1), or
  None/False for no tiling) as an overlap fraction or None.
- `tile_starts` / `tile_boxes`: tile positions covering every pixel, consecutive tiles
  sharing at least `round(overlap * tile)` pixels, spaced evenly, the last tile flush with
  the edge (so no sliver tile at the end).
- `pad_to_tile`: an image smaller than a tile in a dimension is reflect-padded at the
  bottom/right up to the tile (never resized); the blended result is cropped back.
- `tile_window`: the weight of each tile pixel, a raised-cosine (Hann) ramp over the
  overlap border (outer product of two 1-D ramps, 1 in the tile's inside, about
  `(pi / 4r)**2` at the outermost pixel and never 0). A tile's border, where its
  convolutions saw the zero padding instead of the neighbouring pixels, barely counts
  where a neighbour sees the same pixels from its inside; where two tiles overlap by
  exactly the ramp's length their weights add up to 1 (`sin**2 + cos**2`, a cross-fade).
- `TileBlender` / `blend`: the weighted average of the tiles' probabilities
  (`sum(w * p) / sum(w)` per pixel): the weights normalise, so a constant field blends to
  itself, and thresholding or the argmax happens once, on the blended probabilities.

Example:
```python
from keras_unet.runtime.tiling import blend, tile_boxes, tile_window

boxes = tile_boxes((1000, 750), (128, 128), overlap=0.25)
tiles = [model(image[top:bottom, left:right]) for top, left, bottom, right in boxes]
probabilities = blend(tiles, boxes, (1000, 750), tile_window((128, 128), 0.25))
```
"""

import math
import numbers
from typing import Optional

import numpy as np

from keras_unet.runtime.resizing import check_size

__all__ = ["DEFAULT_OVERLAP", "TileBlender", "blend", "pad_to_tile",
           "tile_boxes", "tile_overlap", "tile_starts", "tile_window"]

#: The overlap `tile=True` means: a quarter of the tile on each shared edge.
DEFAULT_OVERLAP = 0.25


def tile_overlap(tile) -> Optional[float]:
    """The overlap fraction a `tile` argument asks for, or None for no tiling.

    Args:
        tile: None or False (no tiling: images are resized to the model input), True
            (tiles overlapping by `DEFAULT_OVERLAP`), or a number in [0, 1): the fraction
            of a tile that neighbouring tiles share (0: tiles only touch, no blending).

    Raises:
        ValueError: anything else.

    Example:
    ```python
    tile_overlap(True), tile_overlap(0.5), tile_overlap(None)   # (0.25, 0.5, None)
    ```
    """
    if tile is None or tile is False:
        return None
    if tile is True:
        return DEFAULT_OVERLAP
    if (isinstance(tile, numbers.Real) and not isinstance(tile, (bool, np.bool_))
            and math.isfinite(float(tile)) and 0 <= float(tile) < 1):
        return float(tile)
    raise ValueError(
        "`tile` must be None/False (resize to the model input), True (tiles overlapping by "
        f"{DEFAULT_OVERLAP:g}) or an overlap fraction in [0, 1). Received: tile={tile!r}"
    )


def _fraction(overlap):
    if isinstance(overlap, (bool, np.bool_)) or tile_overlap(overlap) is None:
        raise ValueError(f"`overlap` must be a fraction in [0, 1). Received: overlap={overlap!r}")
    return float(overlap)


def _overlap_pixels(tile, overlap):
    # At least one pixel of every tile is its own, so tiles always advance.
    return min(int(round(overlap * tile)), tile - 1)


def tile_starts(length, tile, overlap=DEFAULT_OVERLAP) -> list:
    """Start offsets of tiles of `tile` pixels covering `length` pixels along one axis.

    The tiles are spaced evenly: as few as give consecutive tiles at least
    `round(overlap * tile)` shared pixels, the first at 0 and the last flush with the end
    (`length - tile`). A `length` of at most `tile` gets one tile at 0 (pad the image up to
    the tile: `pad_to_tile`).

    Args:
        length: pixels along the axis.
        tile: tile length in pixels.
        overlap: fraction of a tile shared with the next one, in [0, 1).

    Example:
    ```python
    tile_starts(300, 128, 0.25)   # [0, 86, 172]: steps <= 96, the last ends at 300
    ```
    """
    length, tile = int(length), int(tile)
    if length <= 0 or tile <= 0:
        raise ValueError(f"`length` and `tile` must be positive. Received: length={length}, tile={tile}")
    overlap = _fraction(overlap)
    if length <= tile:
        return [0]
    stride = tile - _overlap_pixels(tile, overlap)
    span = length - tile
    count = -(-span // stride) + 1  # ceil(span / stride) steps, plus the first tile
    # Rounded even spacing: no step is longer than `stride`, the last start is `span`.
    return [(i * span * 2 + (count - 1)) // ((count - 1) * 2) for i in range(count)]


def tile_boxes(image_size, tile_size, overlap=DEFAULT_OVERLAP) -> list:
    """`(top, left, bottom, right)` of the tiles covering an image, row by row.

    Args:
        image_size: `(H, W)` of the image (padded up to `tile_size` where smaller).
        tile_size: `(h, w)` of a tile: the model's input size.
        overlap: fraction of a tile shared by neighbouring tiles, in [0, 1).

    Returns:
        list of `(top, left, bottom, right)`, every box `tile_size` large; boxes of an image
        smaller than the tile reach past its edge (pad it with `pad_to_tile`).

    Example:
    ```python
    tile_boxes((200, 128), (128, 128), 0.25)   # [(0, 0, 128, 128), (72, 0, 200, 128)]
    ```
    """
    height, width = check_size(image_size, "image_size")
    tile_h, tile_w = check_size(tile_size, "tile_size")
    return [(top, left, top + tile_h, left + tile_w)
            for top in tile_starts(height, tile_h, overlap)
            for left in tile_starts(width, tile_w, overlap)]


def pad_to_tile(image, tile_size) -> np.ndarray:
    """`image` reflect-padded at the bottom and right to at least `tile_size`.

    An image smaller than a tile in a dimension runs at its native resolution with mirrored
    content around it, rather than resized; crop the result back to `image.shape[:2]`.

    Args:
        image: `(H, W)` or `(H, W, C)` array.
        tile_size: `(h, w)`.

    Example:
    ```python
    pad_to_tile(np.zeros((100, 300, 3)), (128, 128)).shape   # (128, 300, 3)
    ```
    """
    tile_h, tile_w = check_size(tile_size, "tile_size")
    image = np.asarray(image)
    pad_h, pad_w = max(tile_h - image.shape[0], 0), max(tile_w - image.shape[1], 0)
    if not pad_h and not pad_w:
        return image
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="reflect")


def _ramp(length, overlap):
    ramp = _overlap_pixels(length, overlap)
    index = np.arange(length)
    # Distance from the nearer end, in pixels: 0 at the outermost pixel.
    distance = np.minimum(index, length - 1 - index).astype(np.float64)
    if not ramp:
        return np.ones(length)
    return np.where(distance < ramp, np.sin(np.pi / 2 * (distance + 0.5) / ramp) ** 2, 1.0)


def tile_window(tile_size, overlap=DEFAULT_OVERLAP) -> np.ndarray:
    """Blending weights of one tile: a raised-cosine (Hann) ramp over its `overlap` border.

    Along each axis, the `r = round(overlap * tile)` pixels nearest each end weigh
    `sin(pi/2 * (d + 0.5) / r)**2` at distance `d` from the end (about `(pi / 4r)**2` at the
    outermost pixel: 0.01 for `r = 8`), the pixels inside weigh 1; the 2-D window is the
    outer product. Every weight is positive, so each pixel of a covered image has a weight,
    but a tile's border (where its convolutions saw zero padding) barely counts wherever a
    neighbouring tile covers the same pixels. Two tiles sharing exactly `r` pixels
    cross-fade with weights summing to 1. With `overlap=0` every weight is 1.

    Args:
        tile_size: `(h, w)`.
        overlap: as for `tile_boxes`.

    Returns:
        float32 array `(h, w)`.

    Example:
    ```python
    tile_window((4, 4), 0.25)[0]   # [0.25, 0.5, 0.5, 0.25]
    ```
    """
    tile_h, tile_w = check_size(tile_size, "tile_size")
    overlap = _fraction(overlap)
    return np.outer(_ramp(tile_h, overlap), _ramp(tile_w, overlap)).astype(np.float32)


class TileBlender:
    """Accumulates tiles' probabilities into one image, weighted by a window.

    `add` each tile's `(h, w, K)` probabilities with its box, in any order and as many as
    come (a batch at a time keeps memory to one image's sums); `result` is
    `sum(window * p) / sum(window)` per pixel, cropped to `crop` when given.

    Args:
        image_size: `(H, W)` the boxes cover (the padded image).
        window: `(h, w)` weights of a tile (`tile_window`).

    Example:
    ```python
    blender = TileBlender((300, 200), tile_window((128, 128)))
    for box, probabilities in zip(boxes, tiles):
        blender.add(probabilities, box)
    blended = blender.result()   # (300, 200, K) float32
    ```
    """

    def __init__(self, image_size, window):
        self.image_size = check_size(image_size, "image_size")
        self.window = np.asarray(window, dtype=np.float32)
        if self.window.ndim != 2 or not np.all(self.window > 0):
            raise ValueError(
                f"`window` must be a 2-D array of positive weights. Received: shape={self.window.shape}"
            )
        self._sums = None  # (H, W, K), allocated with the first tile (K from its channels)
        self._weights = np.zeros(self.image_size, np.float32)

    def add(self, probabilities, box) -> None:
        """Adds one tile's `(h, w)` or `(h, w, K)` probabilities at `box` (`(top, left, bottom, right)`)."""
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if probabilities.ndim == 2:
            probabilities = probabilities[..., None]
        top, left, bottom, right = (int(v) for v in box)
        if probabilities.shape[:2] != self.window.shape or (bottom - top, right - left) != self.window.shape:
            raise ValueError(
                f"Each tile must be {self.window.shape} (the window). Received: probabilities of "
                f"shape {probabilities.shape} at box {tuple(box)}"
            )
        if top < 0 or left < 0 or bottom > self.image_size[0] or right > self.image_size[1]:
            raise ValueError(f"`box` {tuple(box)} reaches outside the image {self.image_size}.")
        if self._sums is None:
            self._sums = np.zeros(self.image_size + probabilities.shape[2:], np.float32)
        self._sums[top:bottom, left:right] += probabilities * self.window[..., None]
        self._weights[top:bottom, left:right] += self.window

    def result(self, crop=None) -> np.ndarray:
        """The blended `(H, W, K)` float32 probabilities (the top-left `crop` `(H, W)` of them).

        Raises:
            ValueError: no tile was added, or a pixel no tile covered.
        """
        if self._sums is None:
            raise ValueError("No tile was added: nothing to blend.")
        height, width = self.image_size if crop is None else (int(crop[0]), int(crop[1]))
        weights = self._weights[:height, :width]
        if not np.all(weights > 0):
            raise ValueError("Some pixels are covered by no tile: the boxes must cover the image.")
        return self._sums[:height, :width] / weights[..., None]


def blend(tiles, boxes, image_size, window) -> np.ndarray:
    """The weighted average of overlapping tiles: `TileBlender` in one call.

    Args:
        tiles: `(h, w[, K])` probabilities per tile.
        boxes: `(top, left, bottom, right)` per tile (`tile_boxes`).
        image_size: `(H, W)` covered by the boxes.
        window: `(h, w)` weights (`tile_window`).

    Returns:
        float32 array `(H, W, K)`.

    Example:
    ```python
    blend([np.full((8, 8), 0.3)] * 4, tile_boxes((12, 12), (8, 8)), (12, 12), tile_window((8, 8)))
    ```
    """
    if len(tiles) != len(boxes):
        raise ValueError(f"Expected one box per tile. Received: {len(tiles)} tiles, {len(boxes)} boxes")
    blender = TileBlender(image_size, window)
    for probabilities, box in zip(tiles, boxes):
        blender.add(probabilities, box)
    return blender.result()
