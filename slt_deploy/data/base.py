"""What every data set turns into: uint8 NCHW images, int64 labels, and how to normalise them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from slt_deploy.errors import SltError
from slt_deploy.registry import Registry

DATA_DIR_ENV = "SLT_DEPLOY_DATA"
CACHE_DIR_ENV = "SLT_DEPLOY_CACHE"


@dataclass(frozen=True)
class DataSpec:
    """What a ticket must remember about its data: shapes, classes and normalisation."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataSpec:
        return cls(
            name=str(data["name"]),
            input_shape=tuple(int(v) for v in data["input_shape"]),
            num_classes=int(data["num_classes"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            classes=tuple(str(v) for v in data.get("classes", ())),
        )


@dataclass
class DataSplit:
    spec: DataSpec
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    augment: bool = False
    notes: list[str] = field(default_factory=list)
    val_x: torch.Tensor | None = None  # held out of the training set by `hold_out`
    val_y: torch.Tensor | None = None

    def training_set_on(self, device: torch.device, limit_bytes: int = 4 << 30) -> DataSplit:
        """The uint8 training set moved to `device` once, when it fits in `limit_bytes`: batches
        are then gathered and augmented on the GPU, with no host copy per step (CIFAR-10 is
        150 MB). Larger sets stay on the host."""
        if device.type != "cuda" or self.train_x.numel() > limit_bytes:
            return self
        return replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device))

    def subset(self, count: int | None) -> DataSplit:
        """`count` training and `count` test samples drawn by a fixed permutation (the same
        for every run), never the first `count`: ImageFolder trees are sorted by class, and
        their first 10,000 CIFAR-10 images are airplanes and automobiles only (measured)."""
        if count is None:
            return self

        def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:count]
            return x[order], y[order]

        train_x, train_y = pick(self.train_x, self.train_y)
        test_x, test_y = pick(self.test_x, self.test_y)
        return DataSplit(self.spec, train_x, train_y, test_x, test_y, self.augment, self.notes)

    def hold_out(self, count: int | None, seed: int = 1) -> DataSplit:
        """`count` training samples set aside as a validation split, by a permutation fixed by
        `seed` (the same for every run and search seed, so settings are compared on the same
        images); the search never trains on them. Defaults and hyperparameters are chosen on
        split 1 and the test split is reported once; another split checks a choice on images
        it was not chosen on (docs/search.md, "Validation")."""
        if count is None:
            return self
        if not 0 < count < len(self.train_y):
            raise SltError(f"--val-split must lie in [1, {len(self.train_y) - 1}], got {count}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.train_y), generator=generator)
        held, kept = order[:count].sort().values, order[count:].sort().values
        return replace(
            self,
            train_x=self.train_x[kept],
            train_y=self.train_y[kept],
            val_x=self.train_x[held],
            val_y=self.train_y[held],
        )


Loader = Callable[[Path | None, bool], DataSplit]
DATASETS: Registry[Loader] = Registry("data set")


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "slt-deploy")


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = False
) -> DataSplit:
    """Load `name` (`imagefolder:PATH` takes its path from the name)."""
    if name.startswith("imagefolder:"):
        return DATASETS.get("imagefolder")(Path(name.split(":", 1)[1]), download)
    loader = DATASETS.get(name)
    return loader(Path(data_dir) if data_dir is not None else None, download)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale (from the training split)."""
    x = images.to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def normalise(batch: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """uint8 → float32, scaled to [0, 1] and standardised with the spec's statistics."""
    mean = torch.tensor(spec.mean, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=batch.device).view(1, -1, 1, 1)
    return (batch.to(torch.float32) / 255.0 - mean) / std


def augment_crop_flip(
    batch: torch.Tensor, generator: torch.Generator, pad: int = 4
) -> torch.Tensor:
    """Random crop with `pad` zero padding and random horizontal flip, per sample."""
    n, _, h, w = batch.shape
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy.view(n, 1) + torch.arange(h).view(1, h)  # [n, h]
    cols = dx.view(n, 1) + torch.arange(w).view(1, w)  # [n, w]
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    # the draws come from the CPU generator wherever the batch lives: same crops on CPU and GPU
    rows, cols = rows.to(batch.device), cols.to(batch.device)
    idx_n = torch.arange(n, device=batch.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch): resume needs no data-order state."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train_batches(
    split: DataSplit,
    batch_size: int,
    seed: int,
    epoch: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled uint8 batches for one epoch (augmented when the split asks for it)."""
    generator = epoch_generator(seed, epoch)
    order = torch.randperm(len(split.train_y), generator=generator)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        images = split.train_x[index]
        if split.augment:
            images = augment_crop_flip(images, generator)
        yield images, split.train_y[index]


def steps_per_epoch(split: DataSplit, batch_size: int) -> int:
    return -(-len(split.train_y) // batch_size)


def require_dir(path: Path | None, name: str, hint: str) -> Path:
    if path is None:
        raise SltError(f"data set {name!r} needs --data-dir ({hint})")
    if not path.exists():
        raise SltError(f"data directory {path} does not exist ({hint})")
    return path
