"""Fashion-MNIST (60,000 training + 10,000 test images, 28x28 grey, 10 classes) read from the
IDX files of the Debian package ``dataset-fashion-mnist``.

Example:
    >>> images, labels = load_fashion_mnist("train")   # uint8 (60000, 28, 28), int64 (60000,)
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from liteffn.data._fetch import fetch_debian

__all__ = ["CLASSES", "PACKAGE", "load_fashion_mnist", "read_idx"]

PACKAGE = "dataset-fashion-mnist"
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or raw) of unsigned bytes: magic 0x0000_08_<ndim>, big-endian
    int32 sizes, then the data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4]!r})")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise ValueError(f"{path}: expected unsigned-byte data (0x08), got type 0x{dtype_code:02x}")
    shape = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(shape))
    if body.size != expected:
        raise ValueError(f"{path}: header says {shape} = {expected} bytes, file has {body.size}")
    return body.reshape(shape)


def load_fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) for ``split`` "train" (60k) or "test" (10k)."""
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    root = fetch_debian(PACKAGE) / "usr" / "share" / "datasets" / "fashion-mnist"
    img_name, lab_name = _FILES[split]
    images = read_idx(root / img_name)
    labels = read_idx(root / lab_name)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST {split}: images {images.shape} vs labels {labels.shape}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
