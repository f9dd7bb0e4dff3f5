"""keras_unet.export.quantization.tflite_mixed: what it asks of the LiteRT quantizer."""

import pytest


def test_the_quantizers_progress_bars_stay_off_while_it_writes_a_file(capsys):
    pytest.importorskip("litert_quantizer")
    from litert_quantizer.utils import progress_utils

    from keras_unet.export.quantization.tflite_mixed import _no_progress_bars

    original = progress_utils.ProgressBar
    with _no_progress_bars():
        # What its model modifier builds for a model of 500 tensors, asked or not.
        for enable in (None, True):
            with progress_utils.ProgressBar(total_steps=500, description="Applying", enable=enable) as bar:
                bar.update_single_step()
    assert progress_utils.ProgressBar is original
    assert "Applying" not in capsys.readouterr().err
    with progress_utils.ProgressBar(total_steps=500, description="Applying", enable=True) as bar:
        bar.update_single_step()  # outside: the quantizer's own default again
    assert "Applying" in capsys.readouterr().err
