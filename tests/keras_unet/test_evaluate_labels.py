"""`keras-unet evaluate` names each score row after the class it scores."""

import numpy as np

from keras_unet.commands.evaluate import class_labels, format_table
from keras_unet.runtime.scores import segmentation_scores


def test_a_binary_model_s_one_name_labels_the_foreground_row():
    assert class_labels(1, ["nucleus"]) == ["background", "nucleus"]
    assert class_labels(1, None) == ["background", "foreground"]


def test_multi_class_rows_follow_the_names_and_fall_back_to_the_index():
    assert class_labels(3, ["sky", "road"]) == ["sky", "road", "2"]


def test_the_nucleus_row_shows_the_nucleus_iou():
    truth = np.zeros((8, 8), np.int32)
    truth[:4] = 1                      # top half is nucleus
    prediction = np.zeros((8, 8), np.int32)
    prediction[:2] = 1                 # the model finds half of it: nucleus IoU 0.5
    scores = segmentation_scores([truth], [prediction], num_classes=1)
    scores.update(images=1, class_labels=class_labels(1, ["nucleus"]))
    rows = {line.split()[0]: float(line.split()[1]) for line in format_table(scores).splitlines()[1:3]}
    assert rows["nucleus"] == 0.5
    assert rows["background"] == round(32 / 48, 4)
