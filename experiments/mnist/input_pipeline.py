"""MNIST as numpy arrays: from a folder of the four IDX files, or from tensorflow-datasets.

Two sources, one result (:class:`Mnist`, uint8 images ``[n, 28, 28]`` and labels ``[n]``):

- :func:`load_idx_folder` reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each gzip-compressed, with a ``.gz``
  suffix, or not) with a small IDX reader and checks the SHA-256 of the decompressed bytes
  against the official digests, refusing other data unless ``allow_unverified=True``.
- :func:`load_tfds` uses ``tfds.data_source("mnist")``, downloading and preparing it on first
  use. Preparing MNIST in tensorflow-datasets needs TensorFlow; without it, the four IDX files are
  downloaded by tensorflow-datasets' download manager (into its ``downloads`` folder) and read
  with the IDX reader instead.

Every failure is a :class:`DataError` whose message is one line that names the problem and the
fix.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import socket
import urllib.parse
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.mnist import workdir  # the shared path checks
from experiments.mnist.config import DATA_DIR_ENV  # names the IDX folder without --data-dir

# SHA-256 of the official files after gunzip (as pinned by torchvision and others).
OFFICIAL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
IDX_FILES = tuple(OFFICIAL_SHA256)

# Magic numbers of IDX files of unsigned bytes: 0x0000 0x08 <ndim>.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"

_HOW_TO_USE_LOCAL = (
    f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR to a folder with the four MNIST IDX files "
    f"({', '.join(IDX_FILES)}, gzipped or not)"
)


class DataError(Exception):
    """The MNIST data could not be found, read or verified. The message is one line."""


@dataclasses.dataclass(frozen=True)
class Mnist:
    """MNIST in memory.

    Attributes:
      train_images: ``[n_train, 28, 28]`` uint8 grey levels.
      train_labels: ``[n_train]`` uint8 digit labels.
      test_images: ``[n_test, 28, 28]`` uint8 grey levels.
      test_labels: ``[n_test]`` uint8 digit labels.
      source: where the data came from, for the run's record.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def resolve_data_dir(flag_value: str | None) -> str | None:
    """Returns the IDX folder to use: the flag, else the environment variable, else ``None``.

    A folder is returned as an absolute path (``~`` expanded, a relative path resolved from the
    current folder), resolved once here where it enters.
    """
    value = flag_value or os.environ.get(DATA_DIR_ENV) or None
    return None if value is None else str(Path(value).expanduser().resolve())


def load(data_dir: str | None, *, allow_unverified: bool = False) -> Mnist:
    """Loads MNIST from the IDX folder ``data_dir``, or from tensorflow-datasets if ``None``.

    Raises:
      DataError: the data cannot be found, read or verified.
    """
    if data_dir is None:
        # TFDS reads TFDS_DATA_DIR once, at import; read it now so that it always applies.
        return load_tfds(os.environ.get("TFDS_DATA_DIR") or None)
    return load_idx_folder(data_dir, allow_unverified=allow_unverified)


def load_idx_folder(data_dir: str | os.PathLike, *, allow_unverified: bool = False) -> Mnist:
    """Reads the four MNIST IDX files of a folder.

    Args:
      data_dir: folder holding the four files, each named as in ``IDX_FILES`` with or without a
        ``.gz`` suffix.
      allow_unverified: accept files whose decompressed SHA-256 is not the official one (other
        IDX data of the same layout, such as Fashion-MNIST).

    Returns:
      The data set, with ``source`` naming the folder.

    Raises:
      DataError: the folder or a file is missing, a file is truncated, is not a valid gzip file,
        has the wrong magic number or shape, or its SHA-256 is not the official one.
    """
    folder = Path(data_dir)
    if (problem := workdir.folder_problem(folder, writable=False)) is not None:
        raise DataError(f"MNIST data folder {str(folder)!r} {problem}: {_HOW_TO_USE_LOCAL}")
    paths = {}
    for name in IDX_FILES:
        candidates = [folder / name, folder / f"{name}.gz"]
        found = [path for path in candidates if path.exists()]
        for path in found:  # a folder, or a file that cannot be read, is named as what it is
            if (problem := workdir.file_problem(path, writable=False)) is not None:
                raise DataError(f"MNIST file {str(path)!r} {problem}: {_HOW_TO_USE_LOCAL}")
        if not found:
            raise DataError(
                f"MNIST file {name} (or {name}.gz) is missing from {str(folder)!r}: "
                f"{_HOW_TO_USE_LOCAL}"
            )
        paths[name] = found[0]
    return _read_idx_files(paths, verify=not allow_unverified, source=f"idx:{folder.resolve()}")


def _read_idx_files(paths: dict[str, os.PathLike | str], *, verify: bool, source: str) -> Mnist:
    """Reads the four files of ``IDX_FILES``, checking their official SHA-256 if ``verify``."""
    arrays = {
        name: read_idx(
            os.fspath(path),
            expected_magic=_IMAGES_MAGIC if "images" in name else _LABELS_MAGIC,
            expected_sha256=OFFICIAL_SHA256[name] if verify else None,
        )
        for name, path in paths.items()
    }
    return _assemble(
        arrays["train-images-idx3-ubyte"],
        arrays["train-labels-idx1-ubyte"],
        arrays["t10k-images-idx3-ubyte"],
        arrays["t10k-labels-idx1-ubyte"],
        source=source,
    )


def read_idx(
    path: str | os.PathLike, *, expected_magic: int, expected_sha256: str | None = None
) -> np.ndarray:
    """Reads one IDX file of unsigned bytes, gzip-compressed or not (told by its first bytes).

    Args:
      path: the file.
      expected_magic: ``0x00000803`` for images ``[n, rows, cols]``, ``0x00000801`` for labels.
      expected_sha256: hex digest the decompressed content must have, or ``None`` to skip.

    Returns:
      A uint8 array of the shape the header states.

    Raises:
      DataError: the file is not valid gzip, is truncated or too long, has another magic
        number, or its digest differs.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
        if content[:2] == _GZIP_MAGIC:
            content = gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
        # gzip raises EOFError for a truncated stream, BadGzipFile (an OSError) for others.
        reason = "truncated" if isinstance(error, EOFError) else "not a valid gzip file"
        raise DataError(f"MNIST file {str(path)!r} is {reason} ({error})") from None

    if len(content) < 4:
        raise DataError(f"MNIST file {str(path)!r} is truncated: {len(content)} bytes")
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"MNIST file {str(path)!r} has magic number {magic:#010x}, expected "
            f"{expected_magic:#010x} (an IDX file of "
            f"{'images' if expected_magic == _IMAGES_MAGIC else 'labels'}): wrong or corrupt file"
        )
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"MNIST file {str(path)!r} is truncated: its header is incomplete")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header + int(np.prod(shape))
    if len(content) != expected_size:
        state = "truncated" if len(content) < expected_size else "longer than its header says"
        raise DataError(
            f"MNIST file {str(path)!r} is {state}: {len(content)} bytes, expected "
            f"{expected_size} for shape {shape}"
        )
    if expected_sha256 is not None:
        digest = hashlib.sha256(content).hexdigest()
        if digest != expected_sha256:
            raise DataError(
                f"MNIST file {str(path)!r} has SHA-256 {digest}, not the official {expected_sha256}"
                ": replace it with the official file, or pass --allow-unverified-data to use it "
                "anyway"
            )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def _assemble(train_images, train_labels, test_images, test_labels, *, source: str) -> Mnist:
    """Checks that images and labels agree in count and that train and test images match."""
    for split, images, labels in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"MNIST {split} split has {images.shape[0]} images but {labels.shape[0]} labels"
            )
        if images.shape[0] == 0:
            raise DataError(f"MNIST {split} split is empty")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"MNIST train images are {train_images.shape[1:]} but test images are "
            f"{test_images.shape[1:]}"
        )
    return Mnist(train_images, train_labels, test_images, test_labels, source=source)


def load_tfds(tfds_data_dir: str | None = None) -> Mnist:
    """Loads MNIST through tensorflow-datasets, downloading it on first use.

    ``tfds.data_source("mnist")`` reads the prepared data set with numpy only. Preparing it the
    first time needs TensorFlow (the TFDS MNIST builder reads and encodes with it); when
    TensorFlow is not installed, the four IDX files are downloaded with TFDS's download manager
    into ``<tfds data dir>/downloads`` and read with :func:`read_idx` (digests verified).

    Args:
      tfds_data_dir: TFDS data folder; ``None`` for TFDS's default (``~/tensorflow_datasets`` or
        ``$TFDS_DATA_DIR``).

    Raises:
      DataError: tensorflow-datasets is missing, or the download fails (with how to use a local
        folder instead).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(
            f"tensorflow-datasets is not importable ({error}): pip install tensorflow-datasets, "
            f"or {_HOW_TO_USE_LOCAL}"
        ) from None

    builder = tfds.builder("mnist", data_dir=tfds_data_dir)
    if not builder.is_prepared():
        _check_download_host(builder.URL)
        print(
            f"Downloading MNIST with tensorflow-datasets into {builder.data_dir_root} ...",
            flush=True,
        )
    try:
        train, test = tfds.data_source(
            "mnist", split=["train", "test"], data_dir=tfds_data_dir, download=True
        )
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("tensorflow"):
            raise
        return _download_idx_with_tfds(tfds, builder)
    except OSError as error:  # requests' ConnectionError and friends are OSErrors.
        raise DataError(_download_failed(error)) from None
    train_images, train_labels = _arrays_from_source(train)
    test_images, test_labels = _arrays_from_source(test)
    return _assemble(
        train_images, train_labels, test_images, test_labels, source=f"tfds:{builder.data_dir}"
    )


def _arrays_from_source(source) -> tuple[np.ndarray, np.ndarray]:
    """Stacks a TFDS data source of ``{"image": [28, 28, 1], "label": ()}`` records."""
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"], np.uint8).reshape(28, 28) for r in records])
    labels = np.asarray([r["label"] for r in records], np.uint8)
    return images, labels


def _download_idx_with_tfds(tfds, builder) -> Mnist:
    """Downloads the IDX files with TFDS's download manager (no TensorFlow) and reads them."""
    manager = tfds.download.DownloadManager(
        download_dir=builder.data_dir_root / "downloads",
        url_infos=builder.url_infos,
        dataset_name="mnist",
    )
    urls = {name: urllib.parse.urljoin(builder.URL, f"{name}.gz") for name in IDX_FILES}
    try:
        paths = manager.download(urls)
    except OSError as error:
        raise DataError(_download_failed(error)) from None
    return _read_idx_files(
        paths, verify=True, source=f"tfds-downloads:{builder.data_dir_root / 'downloads'}"
    )


def _check_download_host(url: str) -> None:
    """Fails fast when the download host does not resolve (TFDS would retry for minutes)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # Behind a proxy the host may legitimately not resolve locally.
    host = urllib.parse.urlparse(url).hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        raise DataError(_download_failed(error)) from None


def _download_failed(error: BaseException) -> str:
    reason = " ".join(str(error).split())[:200]
    return (
        f"could not download MNIST with tensorflow-datasets ({type(error).__name__}: {reason}); "
        f"without network access, {_HOW_TO_USE_LOCAL}"
    )


def binarize(key: jax.Array, images: jax.Array, mode: str) -> jax.Array:
    """uint8 images ``[batch, ...]`` to float32 pixels ``[batch, data_dim]`` in ``[0, 1]``.

    Runs on the device, inside the jitted training step. Dynamic binarization compares each
    pixel's grey level with a 16-bit uniform integer ``r``: the pixel is 1 when
    ``r < round(level * 65536 / 255)``, so ``P(1) = level / 255`` to within ``2**-17`` (exactly 0
    for black and 1 for white). Two pixels share one 32-bit random word: half the random bits of
    ``jax.random.bernoulli`` (which spends a 32-bit word per pixel) and no float conversion, which
    matters because on CPU drawing random bits costs more than the arithmetic around them.

    Args:
      key: PRNG key of the Bernoulli draws (unused for ``mode="none"``).
      images: uint8 grey levels ``[batch, rows, cols]`` or ``[batch, data_dim]``.
      mode: ``"dynamic"`` draws each pixel as Bernoulli(intensity / 255); ``"none"`` returns the
        grey levels scaled to ``[0, 1]``.

    Returns:
      float32 ``[batch, data_dim]``.
    """
    levels = images.reshape(images.shape[0], -1)
    if mode != "dynamic":
        return levels.astype(jnp.float32) / 255.0
    uniform16 = _binarization_uniforms(key, levels.shape)
    thresholds = (levels.astype(jnp.uint32) * 65536 + 127) // 255
    return (uniform16.astype(jnp.uint32) < thresholds).astype(jnp.float32)


def _binarization_uniforms(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """uint16 uniform integers ``[batch, data_dim]``, two per 32-bit random word."""
    batch, data_dim = shape
    words = jax.random.bits(key, (batch, (data_dim + 1) // 2), jnp.uint32)
    return jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(batch, -1)[:, :data_dim]
