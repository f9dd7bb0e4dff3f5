"""What an image file and a mask file mean in keras-unet, in one namespace (no TensorFlow).

The one definition of reading segmentation data: the `tf.data` pipeline in
`keras_unet.data`, export calibration, evaluation, the runners and the benchmark on an
edge device all go through it. The work is done in small modules, gathered here:

- `keras_unet.runtime.listing`: find image files, pair `DIR/images/<stem>.*` with
  `DIR/masks/<stem>.*` (`list_images`, `list_pairs`).
- `keras_unet.runtime.images`: decode an image with pillow and convert its channels
  (`read_image`, `convert_channels`, `image_size`).
- `keras_unet.runtime.masks`: read a mask's raw values and map them to class indices by
  encoding (`read_mask`, `decode_mask`, `resolve_encoding`, `MASK_ENCODINGS`; the
  encodings are described there).
- `keras_unet.runtime.resizing`: bilinear resize or centre pad/crop
  (`resize_image`, `resize_mask`, `RESIZE_MODES`).
- `keras_unet.runtime.arrays`: one pair, or a whole data set, as arrays
  (`read_pair`, `load_dataset_arrays`).

Example:
```python
from keras_unet.runtime import imageio

pairs = imageio.list_pairs("data/nuclei")            # [(image_path, mask_path), ...]
image = imageio.read_image(pairs[0][0], channels=3)   # uint8 (H, W, 3)
mask = imageio.decode_mask(imageio.read_mask(pairs[0][1]), "binary", path=pairs[0][1])
images, masks = imageio.load_dataset_arrays("data/nuclei", size=(128, 128), channels=3)
```
"""

from keras_unet.runtime.arrays import load_dataset_arrays, read_pair
from keras_unet.runtime.images import (convert_channels, exif_orientation, image_size, open_image,
                                       read_image)
from keras_unet.runtime.listing import IMAGE_EXTENSIONS, MASK_EXTENSIONS, list_images, list_pairs
from keras_unet.runtime.masks import (
    MASK_ENCODINGS,
    check_mask_size,
    decode_mask,
    mask_values,
    read_mask,
    resolve_encoding,
)
from keras_unet.runtime.resizing import RESIZE_MODES, check_size, resize_image, resize_mask

__all__ = [
    "IMAGE_EXTENSIONS", "MASK_ENCODINGS", "MASK_EXTENSIONS", "RESIZE_MODES", "check_mask_size",
    "check_size", "convert_channels", "decode_mask", "exif_orientation", "image_size", "list_images", "list_pairs",
    "load_dataset_arrays", "mask_values", "open_image", "read_image", "read_mask", "read_pair",
    "resize_image", "resize_mask", "resolve_encoding",
]
