"""The engine's data: labels tables, hostile-input archive checks, pixels, and the dataset they make.

    archive.py   the zip and image checks every upload passes (SafeZip, Limits, DataError, open_image)
    table.py     labels.csv / labels.jsonl / data.npz -> Table (cells by column, row names for messages)
    images.py    pixels: to_pixels (THE preprocessing, training and /predict), the uint8 image cache
    dataset.py   Table + spec -> resolved spec, per-task Labels and masks, TrainingData; summary and audit

Import the public names from here (`from service.ml.data import load_training_data`).
"""

from service.ml.data.archive import DEFAULT_LIMITS, DataError, Limits, open_image
from service.ml.data.dataset import (
    Labels,
    TrainingData,
    audit,
    encode_labels,
    load_training_data,
    resolve_spec,
    summarize,
)
from service.ml.data.images import (
    MAX_IMAGE_PIXELS,
    PREPROCESS_VERSION,
    build_image_cache,
    cache_path,
    iter_images,
    to_pixels,
    verify_images,
)
from service.ml.data.table import MAX_SUMMARY_VALUES, Table, as_bool, as_number, class_name, read_table

__all__ = [
    "DEFAULT_LIMITS", "MAX_IMAGE_PIXELS", "MAX_SUMMARY_VALUES", "PREPROCESS_VERSION", "DataError", "Labels",
    "Limits", "Table", "TrainingData", "as_bool", "as_number", "audit", "build_image_cache", "cache_path",
    "class_name", "encode_labels", "iter_images", "load_training_data", "open_image", "read_table",
    "resolve_spec", "summarize", "to_pixels", "verify_images",
]
