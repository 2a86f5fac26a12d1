"""Training data: readers for MVTec AD and plain folders, the corruption of section 3.2, and
the ``tf.data`` pipelines that feed ``model.fit``."""

from ssad.data.distort import distort
from ssad.data.pipeline import train_dataset, validation_dataset
from ssad.data.readers import (
    TestSample,
    load_images,
    read_sample,
    test_samples,
    training_image_paths,
)

__all__ = [
    "TestSample",
    "distort",
    "load_images",
    "read_sample",
    "test_samples",
    "train_dataset",
    "training_image_paths",
    "validation_dataset",
]
