"""The data sets as numpy arrays: from a folder of their four IDX files, or tensorflow-datasets.

The data sets are MNIST and Fashion-MNIST (:data:`DATASETS`, the one table of what differs between
them). Two sources, one result (:class:`ImageData`, uint8 images ``[n, 28, 28]`` and labels
``[n]``):

- :func:`load_idx_folder` reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each gzip-compressed, with a ``.gz``
  suffix, or not) with a small IDX reader and checks their SHA-256 against the data set's official
  digests (:class:`Dataset`: of the decompressed bytes where they are known, as for MNIST; of the
  official ``.gz`` files otherwise, as for Fashion-MNIST), refusing other data unless
  ``allow_unverified=True``.
- :func:`load_tfds` uses ``tfds.data_source(<the data set's TFDS name>)``, downloading and
  preparing it on first use. Preparing it in tensorflow-datasets needs TensorFlow; without it,
  the four IDX files are downloaded by tensorflow-datasets' download manager (into its
  ``downloads`` folder) and read with the IDX reader instead.

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

# The four files of every data set here, in the order they are read.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What differs between the data sets of four IDX files (:data:`DATASETS`).

    Attributes:
      title: how outputs name it (``"Fashion-MNIST"``).
      tfds_name: its name in tensorflow-datasets (``tfds.builder(tfds_name)``).
      data_dir_env: the environment variable naming its IDX folder when ``--data-dir`` is not
        given (one per data set, so that a folder of one is never read as the other).
      sha256: SHA-256 of each official file's decompressed content, by the names of
        :data:`IDX_FILES`; empty where no such digest is published. A file, gzipped or not,
        whose content has it is verified.
      sha256_gz: SHA-256 of each official ``.gz`` file as published (the compressed bytes), for
        data sets without ``sha256``: a ``.gz`` file with these bytes is verified; a decompressed
        or re-compressed copy cannot be, and is refused unless unverified data is allowed.
    """

    title: str
    tfds_name: str
    data_dir_env: str
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    sha256_gz: dict[str, str] = dataclasses.field(default_factory=dict)


# Every data set, once, by its --dataset name. A further data set of four 28x28 IDX files with
# these names is one more entry.
DATASETS = {
    "mnist": Dataset(
        title="MNIST",
        tfds_name="mnist",
        data_dir_env="GUMBEL_JAX_MNIST_DIR",
        # Of the official files after gunzip (as pinned by torchvision and others; the README of
        # the project's shared MNIST folder lists the same).
        sha256={
            "train-images-idx3-ubyte": (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
            ),
            "train-labels-idx1-ubyte": (
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
            ),
            "t10k-images-idx3-ubyte": (
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
            ),
            "t10k-labels-idx1-ubyte": (
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
            ),
        },
    ),
    "fashion_mnist": Dataset(
        # Xiao, Rasul, Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist
        title="Fashion-MNIST",
        tfds_name="fashion_mnist",
        data_dir_env="GUMBEL_JAX_FASHION_MNIST_DIR",
        # Of the official .gz files: tensorflow-datasets 4.9.10's url_checksums/fashion_mnist.txt
        # (the files of http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, also in the
        # repository's data/fashion/), and other projects pin the same. No published digest of
        # their decompressed content was found, so a decompressed copy cannot be verified.
        sha256_gz={
            "train-images-idx3-ubyte": (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
            ),
            "train-labels-idx1-ubyte": (
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            "t10k-images-idx3-ubyte": (
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
            ),
            "t10k-labels-idx1-ubyte": (
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        },
    ),
}
DEFAULT_DATASET = "mnist"
# MNIST's variable (the default data set's), which the tests and the benchmarks read.
DATA_DIR_ENV = DATASETS[DEFAULT_DATASET].data_dir_env

# Magic numbers of IDX files of unsigned bytes: 0x0000 0x08 <ndim>.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"


def _how_to_use_local(dataset: str) -> str:
    """How to point the run at a local folder of ``dataset``'s files, for error messages."""
    spec = DATASETS[dataset]
    form = "gzipped or not" if spec.sha256 else "the official .gz files"
    return (
        f"pass --data-dir DIR or set {spec.data_dir_env}=DIR to a folder with the four "
        f"{spec.title} IDX files ({', '.join(IDX_FILES)}, {form})"
    )


class DataError(Exception):
    """The data could not be found, read or verified. The message is one line."""


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A data set in memory (MNIST, Fashion-MNIST: :data:`DATASETS`).

    Attributes:
      train_images: ``[n_train, 28, 28]`` uint8 grey levels.
      train_labels: ``[n_train]`` uint8 class labels.
      test_images: ``[n_test, 28, 28]`` uint8 grey levels.
      test_labels: ``[n_test]`` uint8 class labels.
      source: where the data came from, for the run's record.
      evaluation: what ``test_*`` holds, the name its metrics are recorded under: ``"test"``, or
        ``"valid"`` for a validation split (the campaign's tuning).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    evaluation: str = "test"


def resolve_data_dir(flag_value: str | None, dataset: str = DEFAULT_DATASET) -> str | None:
    """Returns the IDX folder to use: the flag, else the data set's environment variable
    (:attr:`Dataset.data_dir_env`), else ``None``.

    A folder is returned as an absolute path (``~`` expanded, a relative path resolved from the
    current folder), resolved once here where it enters.
    """
    value = flag_value or os.environ.get(DATASETS[dataset].data_dir_env) or None
    return None if value is None else str(Path(value).expanduser().resolve())


def load(
    data_dir: str | None, *, dataset: str = DEFAULT_DATASET, allow_unverified: bool = False
) -> ImageData:
    """Loads ``dataset`` from the IDX folder ``data_dir``, or from tensorflow-datasets if ``None``.

    Raises:
      DataError: the data cannot be found, read or verified.
    """
    if data_dir is None:
        # TFDS reads TFDS_DATA_DIR once, at import; read it now so that it always applies.
        return load_tfds(os.environ.get("TFDS_DATA_DIR") or None, dataset=dataset)
    return load_idx_folder(data_dir, dataset=dataset, allow_unverified=allow_unverified)


def load_idx_folder(
    data_dir: str | os.PathLike, *, dataset: str = DEFAULT_DATASET, allow_unverified: bool = False
) -> ImageData:
    """Reads the four IDX files of ``dataset`` in a folder.

    Args:
      data_dir: folder holding the four files, each named as in ``IDX_FILES`` with or without a
        ``.gz`` suffix (where both are there, the one the data set's digests can verify: the
        decompressed one for MNIST, the ``.gz`` one for Fashion-MNIST).
      dataset: a key of :data:`DATASETS`: the digests checked and the name in messages.
      allow_unverified: accept files that cannot be verified as the official ones (other IDX
        data of the same layout).

    Returns:
      The data set, with ``source`` naming the folder.

    Raises:
      DataError: the folder or a file is missing, a file is truncated, is not a valid gzip file,
        has the wrong magic number or shape, or is not verified as the official file.
    """
    spec, folder = DATASETS[dataset], Path(data_dir)
    if (problem := workdir.folder_problem(folder, writable=False)) is not None:
        raise DataError(
            f"{spec.title} data folder {str(folder)!r} {problem}: {_how_to_use_local(dataset)}"
        )
    paths = {}
    for name in IDX_FILES:
        candidates = [folder / name, folder / f"{name}.gz"]
        if not spec.sha256:  # only the .gz files can be verified
            candidates.reverse()
        found = [path for path in candidates if path.exists()]
        for path in found:  # a folder, or a file that cannot be read, is named as what it is
            if (problem := workdir.file_problem(path, writable=False)) is not None:
                raise DataError(
                    f"{spec.title} file {str(path)!r} {problem}: {_how_to_use_local(dataset)}"
                )
        if not found:
            raise DataError(
                f"{spec.title} file {name} (or {name}.gz) is missing from {str(folder)!r}: "
                f"{_how_to_use_local(dataset)}"
            )
        paths[name] = found[0]
    return _read_idx_files(
        paths, dataset=dataset, verify=not allow_unverified, source=f"idx:{folder.resolve()}"
    )


def _read_idx_files(
    paths: dict[str, os.PathLike | str], *, dataset: str, verify: bool, source: str
) -> ImageData:
    """Reads the four files of ``IDX_FILES``, checking the data set's digests if ``verify``."""
    spec = DATASETS[dataset]
    arrays = {
        name: read_idx(
            os.fspath(path),
            expected_magic=_IMAGES_MAGIC if "images" in name else _LABELS_MAGIC,
            expected_sha256=spec.sha256.get(name) if verify else None,
            expected_sha256_gz=spec.sha256_gz.get(name) if verify else None,
            dataset=dataset,
        )
        for name, path in paths.items()
    }
    return _assemble(
        arrays["train-images-idx3-ubyte"],
        arrays["train-labels-idx1-ubyte"],
        arrays["t10k-images-idx3-ubyte"],
        arrays["t10k-labels-idx1-ubyte"],
        source=source,
        dataset=dataset,
    )


def read_idx(
    path: str | os.PathLike,
    *,
    expected_magic: int,
    expected_sha256: str | None = None,
    expected_sha256_gz: str | None = None,
    dataset: str = DEFAULT_DATASET,
) -> np.ndarray:
    """Reads one IDX file of unsigned bytes, gzip-compressed or not (told by its first bytes).

    Args:
      path: the file.
      expected_magic: ``0x00000803`` for images ``[n, rows, cols]``, ``0x00000801`` for labels.
      expected_sha256: hex digest the decompressed content must have, or ``None``.
      expected_sha256_gz: hex digest of the official ``.gz`` file, or ``None``: a gzipped file
        with these very bytes is verified too (the only check when ``expected_sha256`` is
        ``None``: a decompressed file then cannot be verified, and is refused). Both ``None``:
        nothing is checked.
      dataset: the data set, named in the messages.

    Returns:
      A uint8 array of the shape the header states.

    Raises:
      DataError: the file is not valid gzip, is truncated or too long, has another magic
        number, or is not verified by the digests given.
    """
    path, title = Path(path), DATASETS[dataset].title
    try:
        raw = content = path.read_bytes()
        if content[:2] == _GZIP_MAGIC:
            content = gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
        # gzip raises EOFError for a truncated stream, BadGzipFile (an OSError) for others.
        reason = "truncated" if isinstance(error, EOFError) else "not a valid gzip file"
        raise DataError(f"{title} file {str(path)!r} is {reason} ({error})") from None

    if len(content) < 4:
        raise DataError(f"{title} file {str(path)!r} is truncated: {len(content)} bytes")
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{title} file {str(path)!r} has magic number {magic:#010x}, expected "
            f"{expected_magic:#010x} (an IDX file of "
            f"{'images' if expected_magic == _IMAGES_MAGIC else 'labels'}): wrong or corrupt file"
        )
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"{title} file {str(path)!r} is truncated: its header is incomplete")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header + int(np.prod(shape))
    if len(content) != expected_size:
        state = "truncated" if len(content) < expected_size else "longer than its header says"
        raise DataError(
            f"{title} file {str(path)!r} is {state}: {len(content)} bytes, expected "
            f"{expected_size} for shape {shape}"
        )
    problem = _unverified(raw, content, expected_sha256, expected_sha256_gz)
    if problem is not None:
        raise DataError(
            f"{title} file {str(path)!r} {problem}: replace it with the official file, or pass "
            "--allow-unverified-data to use it anyway"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def _unverified(
    raw: bytes, content: bytes, expected: str | None, expected_gz: str | None
) -> str | None:
    """Why a file (``raw`` bytes, ``content`` decompressed) is not verified, or ``None``."""
    if expected is None and expected_gz is None:
        return None
    gzipped = raw[:2] == _GZIP_MAGIC
    raw_digest = hashlib.sha256(raw).hexdigest() if gzipped and expected_gz else None
    if raw_digest is not None and raw_digest == expected_gz:
        return None
    if expected is not None:
        digest = hashlib.sha256(content).hexdigest()
        return None if digest == expected else f"has SHA-256 {digest}, not the official {expected}"
    if raw_digest is not None:
        return (
            f"has SHA-256 {raw_digest}, not the official {expected_gz} of the .gz file (a "
            "re-compressed copy differs in its bytes and cannot be verified)"
        )
    return (
        "is not gzipped, so it cannot be verified: only the official .gz files' SHA-256 is "
        "published (a decompressed or re-compressed copy has no known digest)"
    )


def _assemble(
    train_images, train_labels, test_images, test_labels, *, source: str, dataset: str
) -> ImageData:
    """Checks that images and labels agree in count and that train and test images match."""
    title = DATASETS[dataset].title
    for split, images, labels in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{title} {split} split has {images.shape[0]} images but {labels.shape[0]} labels"
            )
        if images.shape[0] == 0:
            raise DataError(f"{title} {split} split is empty")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{title} train images are {train_images.shape[1:]} but test images are "
            f"{test_images.shape[1:]}"
        )
    return ImageData(train_images, train_labels, test_images, test_labels, source=source)


def load_tfds(tfds_data_dir: str | None = None, *, dataset: str = DEFAULT_DATASET) -> ImageData:
    """Loads ``dataset`` through tensorflow-datasets, downloading it on first use.

    ``tfds.data_source(<its TFDS name>)`` reads the prepared data set with numpy only. Preparing
    it the first time needs TensorFlow (the TFDS builders of MNIST and Fashion-MNIST read and
    encode with it); when TensorFlow is not installed, the four IDX files are downloaded with
    TFDS's download manager into ``<tfds data dir>/downloads`` and read with :func:`read_idx`
    (digests verified).

    Args:
      tfds_data_dir: TFDS data folder; ``None`` for TFDS's default (``~/tensorflow_datasets`` or
        ``$TFDS_DATA_DIR``).
      dataset: a key of :data:`DATASETS`.

    Raises:
      DataError: tensorflow-datasets is missing, or the download fails (with how to use a local
        folder instead).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(
            f"tensorflow-datasets is not importable ({error}): pip install tensorflow-datasets, "
            f"or {_how_to_use_local(dataset)}"
        ) from None

    spec = DATASETS[dataset]
    builder = tfds.builder(spec.tfds_name, data_dir=tfds_data_dir)
    if not builder.is_prepared():
        try:
            _check_download_host(builder.URL)
        except OSError as error:
            raise DataError(_download_failed(error, dataset)) from None
        print(
            f"Downloading {spec.title} with tensorflow-datasets into {builder.data_dir_root} ...",
            flush=True,
        )
    try:
        train, test = tfds.data_source(
            spec.tfds_name, split=["train", "test"], data_dir=tfds_data_dir, download=True
        )
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("tensorflow"):
            raise
        return _download_idx_with_tfds(tfds, builder, dataset=dataset)
    except OSError as error:  # requests' ConnectionError and friends are OSErrors.
        raise DataError(_download_failed(error, dataset)) from None
    train_images, train_labels = _arrays_from_source(train)
    test_images, test_labels = _arrays_from_source(test)
    return _assemble(
        train_images,
        train_labels,
        test_images,
        test_labels,
        source=f"tfds:{builder.data_dir}",
        dataset=dataset,
    )


def _arrays_from_source(source) -> tuple[np.ndarray, np.ndarray]:
    """Stacks a TFDS data source of ``{"image": [28, 28, 1], "label": ()}`` records."""
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"], np.uint8).reshape(28, 28) for r in records])
    labels = np.asarray([r["label"] for r in records], np.uint8)
    return images, labels


def _download_idx_with_tfds(tfds, builder, *, dataset: str) -> ImageData:
    """Downloads the IDX files with TFDS's download manager (no TensorFlow) and reads them."""
    manager = tfds.download.DownloadManager(
        download_dir=builder.data_dir_root / "downloads",
        url_infos=builder.url_infos,
        dataset_name=DATASETS[dataset].tfds_name,
    )
    urls = {name: urllib.parse.urljoin(builder.URL, f"{name}.gz") for name in IDX_FILES}
    try:
        paths = manager.download(urls)
    except OSError as error:
        raise DataError(_download_failed(error, dataset)) from None
    return _read_idx_files(
        paths,
        dataset=dataset,
        verify=True,
        source=f"tfds-downloads:{builder.data_dir_root / 'downloads'}",
    )


def _check_download_host(url: str) -> None:
    """Fails fast when the download host does not resolve (TFDS would retry for minutes).

    Raises:
      OSError: the host does not resolve.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # Behind a proxy the host may legitimately not resolve locally.
    socket.getaddrinfo(urllib.parse.urlparse(url).hostname, 443)


def _download_failed(error: BaseException, dataset: str) -> str:
    reason = " ".join(str(error).split())[:200]
    return (
        f"could not download {DATASETS[dataset].title} with tensorflow-datasets "
        f"({type(error).__name__}: {reason}); without network access, "
        f"{_how_to_use_local(dataset)}"
    )


def binarize(key: jax.Array, images: jax.Array, mode: str) -> jax.Array:
    """uint8 images to float32 pixels ``[batch, rows, cols, channels]`` in ``[0, 1]``.

    Runs on the device, inside the jitted training step. Dynamic binarization compares each
    pixel's grey level with a 16-bit uniform integer ``r``: the pixel is 1 when
    ``r < round(level * 65536 / 255)``, so ``P(1) = level / 255`` to within ``2**-17`` (exactly 0
    for black and 1 for white). Two pixels share one 32-bit random word: half the random bits of
    ``jax.random.bernoulli`` (which spends a 32-bit word per pixel) and no float conversion, which
    matters because on CPU drawing random bits costs more than the arithmetic around them.

    Args:
      key: PRNG key of the Bernoulli draws (unused for ``mode="none"``).
      images: uint8 grey levels ``[batch, rows, cols]`` (given a channel axis) or
        ``[batch, rows, cols, channels]`` (any other ``[batch, ...]`` keeps its shape). The
        draws of an image do not depend on its shape: they are drawn flat, then shaped.
      mode: ``"dynamic"`` draws each pixel as Bernoulli(intensity / 255); ``"none"`` returns the
        grey levels scaled to ``[0, 1]``.

    Returns:
      float32 ``[batch, rows, cols, channels]``.
    """
    shape = (*images.shape, 1) if images.ndim == 3 else images.shape
    # The arithmetic on flat pixels ``[batch, pixels]``, shaped at the end: XLA on CPU runs
    # elementwise work on a trailing axis of size 1 several times slower.
    levels = images.reshape(shape[0], -1)
    if mode != "dynamic":
        return (levels.astype(jnp.float32) / 255.0).reshape(shape)
    uniform16 = _binarization_uniforms(key, levels.shape)
    thresholds = (levels.astype(jnp.uint32) * 65536 + 127) // 255
    return (uniform16.astype(jnp.uint32) < thresholds).astype(jnp.float32).reshape(shape)


def _binarization_uniforms(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """uint16 uniform integers ``[batch, pixels]``, two per 32-bit random word."""
    batch, pixels = shape
    words = jax.random.bits(key, (batch, (pixels + 1) // 2), jnp.uint32)
    return jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(batch, -1)[:, :pixels]
