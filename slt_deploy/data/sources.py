"""The built-in data sets: MNIST, Fashion-MNIST, CIFAR-10, any ImageFolder, and scikit-learn's
digits (the embedded default: real handwritten digits shipped inside a dependency)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from slt_deploy.atomic import atomic_path
from slt_deploy.data.base import (
    DATASETS,
    DataSpec,
    DataSplit,
    channel_stats,
    default_cache_dir,
    require_dir,
)
from slt_deploy.errors import SltError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


def _split(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    classes: Iterable[str],
    augment: bool = False,
) -> DataSplit:
    train = torch.from_numpy(np.ascontiguousarray(train_x))
    mean, std = channel_stats(train)
    classes = tuple(classes)
    spec = DataSpec(name, tuple(train.shape[1:]), len(classes), mean, std, classes)
    return DataSplit(
        spec,
        train,
        torch.from_numpy(train_y.astype(np.int64)),
        torch.from_numpy(np.ascontiguousarray(test_x)),
        torch.from_numpy(test_y.astype(np.int64)),
        augment,
    )


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip): 4 big-endian header ints, then raw unsigned bytes."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SltError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SltError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim not in (1, 3) or len(raw) < header:
        raise SltError(f"{path}: unexpected IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise SltError(f"{path}: truncated or oversized IDX payload")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_idx(roots: list[Path], stem: str) -> Path | None:
    for root in roots:
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _load_idx_dataset(
    name: str, torchvision_name: str, data_dir: Path | None, download: bool, extra_roots: list[Path]
) -> DataSplit:
    roots = []
    if data_dir is not None:
        roots += [data_dir, data_dir / torchvision_name / "raw"]
    roots += extra_roots
    found = {key: _find_idx(roots, stem) for key, stem in IDX_FILES.items()}
    if any(path is None for path in found.values()) and download:
        if data_dir is None:
            raise SltError(f"--download needs --data-dir for {name}")
        _torchvision_download(torchvision_name, data_dir)
        found = {key: _find_idx(roots, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, path in found.items() if path is None]
    if missing:
        where = str(data_dir) if data_dir is not None else "(no --data-dir given)"
        raise SltError(
            f"{name}: missing {', '.join(m + '[.gz]' for m in missing)} in {where}; put the IDX "
            f"files there or pass --download on a machine with internet"
        )
    arrays = {key: read_idx(path) for key, path in found.items()}
    for part in ("train", "test"):
        if len(arrays[f"{part}_x"]) != len(arrays[f"{part}_y"]):
            raise SltError(f"{name}: {part} images and labels differ in count")
    classes = [str(i) for i in range(int(arrays["train_y"].max()) + 1)]
    return _split(
        name,
        arrays["train_x"][:, None],
        arrays["train_y"],
        arrays["test_x"][:, None],
        arrays["test_y"],
        classes,
    )


def _torchvision_download(torchvision_name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    try:
        getattr(tvd, torchvision_name)(root=str(root), train=True, download=True)
        getattr(tvd, torchvision_name)(root=str(root), train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise SltError(f"download of {torchvision_name} into {root} failed: {exc}") from None


@DATASETS.register("mnist")
def mnist(data_dir: Path | None, download: bool) -> DataSplit:
    return _load_idx_dataset("mnist", "MNIST", data_dir, download, [])


@DATASETS.register("fashion-mnist")
def fashion_mnist(data_dir: Path | None, download: bool) -> DataSplit:
    return _load_idx_dataset(
        "fashion-mnist", "FashionMNIST", data_dir, download, [DEBIAN_FASHION_MNIST]
    )


# --- CIFAR-10 -----------------------------------------------------------------------------

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Reads CIFAR's pickled batches but resolves no global except numpy's array rebuilders,
    so a hostile file cannot run code (the same idea as torch.load(weights_only=True))."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # protocol-2 bytes written by Python 3; a pure function
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnlyUnpickler(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as exc:
        raise SltError(f"{path} is not a CIFAR-10 python batch: {exc}") from None
    return data, labels


def _cifar_python_batches(directory: Path) -> DataSplit:
    parts = [_read_cifar_batch(directory / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(directory / "test_batch")
    return _split(
        "cifar10",
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        test_x,
        test_y,
        CIFAR10_CLASSES,
        True,
    )


@DATASETS.register("cifar10")
def cifar10(data_dir: Path | None, download: bool) -> DataSplit:
    hint = "the cifar-10-batches-py folder, an ImageFolder tree with train/ and test/, or its .tar"
    if data_dir is not None and not data_dir.exists() and download:
        data_dir.mkdir(parents=True)
    data_dir = require_dir(data_dir, "cifar10", hint)
    for candidate in (data_dir, data_dir / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file():
            return _cifar_python_batches(candidate)
    if data_dir.is_file() or (data_dir / "train").is_dir():
        split = load_imagefolder(data_dir, "cifar10")
        split.augment = True
        return split
    if download:
        import torchvision.datasets as tvd

        try:
            tvd.CIFAR10(root=str(data_dir), train=True, download=True)
        except Exception as exc:
            raise SltError(f"download of CIFAR10 into {data_dir} failed: {exc}") from None
        return _cifar_python_batches(data_dir / "cifar-10-batches-py")
    raise SltError(f"cifar10: nothing usable in {data_dir}; expected {hint}")


# --- ImageFolder (directory or tar) ---------------------------------------------------------


def _decode(data: bytes, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if size is not None and image.size != size:
            image = image.resize(size, Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _index_tree(root: Path) -> list[tuple[str, str, str]]:
    """(split, class, relative path) of every image under root/<split>/<class>/."""
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and len(rel) >= 3:
            entries.append((rel[-3], rel[-2], "/".join(rel)))
    return entries


def _index_tar(archive: tarfile.TarFile) -> list[tuple[str, str, str]]:
    entries = []
    for member in archive.getmembers():
        parts = member.name.split("/")
        if (
            member.isfile()
            and Path(member.name).suffix.lower() in IMAGE_SUFFIXES
            and len(parts) >= 3
        ):
            entries.append((parts[-3], parts[-2], member.name))
    return sorted(entries, key=lambda e: e[2])


def _cache_key(source: Path) -> str:
    stat = source.stat()
    digest = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file():
                digest.update(f"{path}|{path.stat().st_size}".encode())
    return digest.hexdigest()[:20]


def load_imagefolder(source: Path, name: str = "imagefolder") -> DataSplit:
    """train/ and test/ (or val/) class folders, from a directory or a tar of one; decoded once
    into a uint8 cache so later epochs and runs do not decode JPEGs again."""
    if not source.exists():
        raise SltError(f"image folder {source} does not exist")
    cache = default_cache_dir() / f"{name}-{_cache_key(source)}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            return _split(
                name,
                arrays["train_x"],
                arrays["train_y"],
                arrays["test_x"],
                arrays["test_y"],
                [str(c) for c in arrays["classes"]],
                augment=False,
            )
        except (OSError, ValueError, KeyError):
            cache.unlink(missing_ok=True)  # a damaged cache is rebuilt, never trusted
    if source.is_file():
        try:
            archive = tarfile.open(source)  # noqa: SIM115 (closed by the with-block below)
        except (tarfile.TarError, OSError) as exc:
            raise SltError(
                f"{source} is neither an image folder nor a readable tar: {exc}"
            ) from None
        with archive:
            entries = _index_tar(archive)
            wanted = {e[2] for e in entries}
            # in archive order: a compressed tar (.tar.gz) read out of order decompresses
            # from its start for every backward seek (minutes instead of seconds)
            blobs = {
                m.name: archive.extractfile(m).read()
                for m in archive.getmembers()
                if m.name in wanted
            }
        read = blobs.__getitem__
    else:
        entries = _index_tree(source)
        read = lambda rel: (source / rel).read_bytes()  # noqa: E731
    splits = {e[0] for e in entries}
    test_name = "test" if "test" in splits else "val"
    if "train" not in splits or test_name not in splits:
        raise SltError(f"{source}: expected train/ and test/ (or val/) class folders of images")
    classes = sorted({e[1] for e in entries if e[0] == "train"})
    class_index = {c: i for i, c in enumerate(classes)}
    arrays: dict[str, np.ndarray] = {}
    first = _decode(read(next(e[2] for e in entries if e[0] == "train")), None)
    size = (first.shape[2], first.shape[1])
    with ThreadPoolExecutor(max_workers=4) as pool:
        for part, split_name in (("train", "train"), ("test", test_name)):
            chosen = [e for e in entries if e[0] == split_name and e[1] in class_index]
            try:
                images = list(pool.map(lambda e: _decode(read(e[2]), size), chosen))
            except OSError as exc:
                raise SltError(f"{source}: cannot decode an image: {exc}") from None
            arrays[f"{part}_x"] = np.stack(images)
            arrays[f"{part}_y"] = np.array([class_index[e[1]] for e in chosen], dtype=np.int64)
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, classes=np.array(classes), **arrays)
    return _split(
        name, arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"], classes
    )


@DATASETS.register("imagefolder")
def imagefolder(path: Path | None, download: bool) -> DataSplit:
    if path is None:
        raise SltError("use --data imagefolder:PATH")
    return load_imagefolder(path)


# --- scikit-learn digits (embedded, no download) --------------------------------------------


@DATASETS.register("digits")
def digits(data_dir: Path | None, download: bool) -> DataSplit:
    """UCI handwritten digits (8x8, 1797 samples) shipped by scikit-learn; fixed 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    order = np.random.Generator(np.random.Philox(key=0)).permutation(len(images))
    cut = int(0.8 * len(images))
    train, test = order[:cut], order[cut:]
    return _split(
        "digits",
        images[train],
        bunch.target[train],
        images[test],
        bunch.target[test],
        [str(i) for i in range(10)],
    )
