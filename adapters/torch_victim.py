"""PyTorch victims (built-in, timm, torchvision or user architectures) as ART classifiers."""

from __future__ import annotations

import json
import time
from typing import Any

import torch
import torch.nn as nn
from art.estimators.classification import PyTorchClassifier

from stealcheck.cache import file_digest, fingerprint
from stealcheck.datasets import scenario_path
from stealcheck.errors import ScenarioError
from stealcheck.scenario import InputSpec
from stealcheck.victim import Victim, VictimContext

from .networks import Normalize, build_network, fit_network, one_hot
from .specs import TorchVictimParams

TRAINING_RECIPE_VERSION = 1  # bump when fit_network's behaviour changes, to invalidate cached victims


class _WithSoftmax(nn.Module):
    """Puts the softmax in the adapter so that the served victim returns probabilities
    (ART's postprocessor defences assume probabilities)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def _normalizer(spec: InputSpec) -> nn.Module | None:
    return Normalize(spec.mean, spec.std) if spec.mean is not None else None


def _wrap(net: nn.Module, p: TorchVictimParams, nb_classes: int) -> PyTorchClassifier:
    net.eval()
    return PyTorchClassifier(model=_WithSoftmax(net), loss=nn.NLLLoss(), input_shape=tuple(p.input.shape),
                             nb_classes=nb_classes, clip_values=tuple(p.input.range), device_type="cpu")


class TorchVictim:
    """A PyTorch model: built-in conv3/mlp/resnet18, any timm or torchvision model, or your own callable."""

    @staticmethod
    def build(p: TorchVictimParams, ctx: VictimContext) -> Victim:
        shape = tuple(p.input.shape)
        norm = _normalizer(p.input)
        info: dict[str, Any] = {"architecture": p.architecture}
        if p.weights is not None:
            path = scenario_path(p.weights, ctx.base_dir)
            if not path.exists():
                raise ScenarioError(f"weights file not found: {path}", path="victim.weights")
            if p.nb_classes is None:
                raise ScenarioError("nb_classes is required when weights are given.", path="victim.nb_classes")
            nb_classes = p.nb_classes
            net = build_network(p.architecture, shape, nb_classes, p.arch_params, base_dir=ctx.base_dir)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                net.load_state_dict(state)
                model = nn.Sequential(norm, net) if norm is not None else net
            except Exception as exc:  # a bad file must not be a traceback
                raise ScenarioError(f"cannot load state_dict from {path}: {exc}", path="victim.weights") from None
            info.update(source=str(path), trained_here=False, file_sha256=file_digest(path))
        else:
            train = ctx.load_data("victim_train")
            if train.y is None:
                raise ScenarioError("data.victim_train has no labels; a victim cannot be trained on it.",
                                    path="data.victim_train")
            nb_classes = p.nb_classes or int(train.y.max()) + 1
            key = fingerprint({"kind": "torch", "params": p.model_dump(mode="json"), "nb_classes": nb_classes,
                               "data": ctx.data_fingerprint("victim_train"), "seed": ctx.seed,
                               "recipe": TRAINING_RECIPE_VERSION, "torch": torch.__version__})
            torch.manual_seed(ctx.seed)
            net = build_network(p.architecture, shape, nb_classes, p.arch_params, base_dir=ctx.base_dir)
            model = nn.Sequential(norm, net) if norm is not None else net
            entry = ctx.cache.path("victims", key)
            if p.cache and ctx.cache.has("victims", key):
                model.load_state_dict(torch.load(entry / "model.pt", map_location="cpu", weights_only=True))
                info.update(json.loads((entry / "meta.json").read_text()), cached=True)
            else:
                start = time.perf_counter()
                fit_network(model, train.x, one_hot(train.y, nb_classes), steps=p.train.steps,
                            batch_size=p.train.batch_size, lr=p.train.lr, seed=ctx.seed,
                            desc="training victim", progress=ctx.progress)
                meta = {"train_seconds": round(time.perf_counter() - start, 2), "train_samples": len(train)}
                info.update(meta, cached=False)
                if p.cache:
                    with ctx.cache.writer("victims", key) as tmp:
                        torch.save(model.state_dict(), tmp / "model.pt")
                        (tmp / "meta.json").write_text(json.dumps(meta))
            info["cache_key"] = key
        classifier = _wrap(model, p, nb_classes)

        def network_factory() -> nn.Module:
            net = build_network(p.architecture, shape, nb_classes, p.arch_params, base_dir=ctx.base_dir)
            return nn.Sequential(_normalizer(p.input), net) if p.input.mean is not None else net

        arch_desc = p.architecture + (f"({', '.join(f'{k}={v}' for k, v in p.arch_params.items())})"
                                      if p.arch_params else "")
        return Victim(classifier=classifier, nb_classes=nb_classes, input_shape=shape,
                      clip_values=tuple(p.input.range), description=f"torch {arch_desc}",
                      thief_architecture=p.architecture, thief_arch_params=dict(p.arch_params), info=info,
                      network_factory=network_factory, network=model, train_recipe=p.train.model_dump())
