"""`python -m keras_unet.benchmarks MODEL [MODEL ...] --data DIR`: see `keras_unet.benchmarks.cli`."""

import sys

from keras_unet.benchmarks.cli import main

sys.exit(main())
