"""Writes random digits in the MNIST IDX layout, for tests that need data but not real MNIST."""

from pathlib import Path

import numpy as np


def write_random_idx(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random uint8 digits in the IDX layout (unofficial data: needs --allow-unverified-data)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        header = b"".join(d.to_bytes(4, "big") for d in (0x803, *images.shape))
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        header = b"".join(d.to_bytes(4, "big") for d in (0x801, n))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    return folder
