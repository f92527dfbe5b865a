import gzip
import pickle
import tarfile

import numpy as np
import pytest

from slt_deploy.data import load_dataset
from slt_deploy.data.base import augment_crop_flip, epoch_generator, train_batches
from slt_deploy.data.sources import read_idx
from slt_deploy.errors import SltError


def test_mnist_from_shared_idx(mnist_dir):
    split = load_dataset("mnist", mnist_dir)
    assert split.train_x.shape == (60000, 1, 28, 28) and split.test_x.shape == (10000, 1, 28, 28)
    assert split.spec.mean[0] == pytest.approx(0.1307, abs=1e-3)  # the known MNIST statistics
    assert split.spec.std[0] == pytest.approx(0.3081, abs=1e-3)
    assert sorted(set(split.train_y.tolist())) == list(range(10))


def test_fashion_mnist_in_torchvision_raw_layout(fashion_dir, tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in fashion_dir.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    split = load_dataset("fashion-mnist", tmp_path)
    assert split.train_x.shape[0] == 60000 and split.spec.num_classes == 10


def test_missing_and_corrupt_idx_files_are_clear_errors(tmp_path, mnist_dir):
    with pytest.raises(SltError, match="missing train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)
    for f in mnist_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:-10]))
    with pytest.raises(SltError, match="truncated"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(SltError, match="not an IDX"):
        bad = tmp_path / "x"
        bad.write_bytes(b"PK\x03\x04 not idx")
        read_idx(bad)


def test_digits_is_embedded_and_split_is_fixed():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.train_x.shape == (1437, 1, 8, 8) and a.test_x.shape == (360, 1, 8, 8)
    assert (a.train_y == b.train_y).all() and int(a.train_x.max()) == 255


def _small_imagefolder_tar(cifar_tar, path, per_class=6):
    """A real subset of the shared CIFAR-10 JPEG tar: `per_class` images per class and split."""
    counts = {}
    with tarfile.open(cifar_tar) as src, tarfile.open(path, "w") as dst:
        for member in src:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3:
                continue
            key = (parts[-3], parts[-2])
            if counts.get(key, 0) < per_class:
                counts[key] = counts.get(key, 0) + 1
                dst.addfile(member, src.extractfile(member))
            if len(counts) == 20 and all(v == per_class for v in counts.values()):
                break
    return path


def test_cifar10_imagefolder_tar_and_cache(cifar_tar, tmp_path):
    small = _small_imagefolder_tar(cifar_tar, tmp_path / "cifar-small.tar")
    split = load_dataset("cifar10", small)
    assert split.train_x.shape == (60, 3, 32, 32) and split.test_x.shape == (60, 3, 32, 32)
    assert split.spec.classes[0] == "airplane" and split.augment
    again = load_dataset("cifar10", small)  # from the decoded cache this time
    assert (again.train_x == split.train_x).all()


def test_cifar10_python_batches_read_without_running_code(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    split = load_dataset("cifar10", tmp_path)
    assert split.train_x.shape == (20, 3, 32, 32)

    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(SltError, match="not allowed"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset_and_imagefolder_errors(tmp_path):
    with pytest.raises(SltError, match="unknown data set"):
        load_dataset("imagenet")
    with pytest.raises(SltError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "only" / "train" / "a").mkdir(parents=True)
    with pytest.raises(SltError, match="expected train/ and test/"):
        load_dataset(f"imagefolder:{tmp_path / 'only'}")
    with pytest.raises(SltError, match="needs --data-dir"):
        load_dataset("cifar10")


def test_epoch_order_depends_only_on_seed_and_epoch():
    split = load_dataset("digits")
    first = [y.tolist() for _, y in train_batches(split, 100, 3, 2)]
    again = [y.tolist() for _, y in train_batches(split, 100, 3, 2)]
    other = [y.tolist() for _, y in train_batches(split, 100, 3, 1)]
    assert first == again and first != other


def test_crop_flip_keeps_pixels_and_shape():
    import torch

    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    out = augment_crop_flip(images, epoch_generator(0, 0), pad=0)
    for i in range(2):
        assert torch.equal(out[i], images[i]) or torch.equal(out[i], images[i].flip(-1))
    assert augment_crop_flip(images, epoch_generator(0, 0)).shape == images.shape


def test_data_buffer_is_not_written_through(mnist_dir):
    # read_idx returns an owned, writable array (torch warns on read-only buffers)
    arr = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert arr.flags.writeable and arr.shape == (10000,)
