"""Where the ownership schemes meet the rest of a run: the marks they put in the deployment (a watermark
fine-tuned into the victim, DAWN at the API), the copies the extraction cells keep, and the defender's
context.

The victim the attacks steal from is the deployed one: the scenario's victim with every training
embedding fine-tuned in. A training embedding is a set of extra samples with a batch share
(:class:`~.base.TrainingEmbedding`); a later training-time defence (DP-SGD, adversarial training) can
train on the same samples with its own recipe instead of this fine-tuning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from stealcheck import registry
from stealcheck.cache import Cache, fingerprint
from stealcheck.scenario import private_role

from .base import OwnershipContext, TrainingEmbedding

log = logging.getLogger("stealcheck")

FINETUNE_RECIPE_VERSION = 1


def schemes_embedding(scenario, where: str) -> list:
    """(ref, scheme instance) of the scenario's schemes that embed a mark ``where`` (training | oracle)."""
    out = []
    for ref in scenario.ownership:
        info = registry.ownership.get(ref.plugin)
        if info.caps.embeds(ref.params) == where:
            out.append((ref, info.obj(ref.params)))
    return out


def ownership_context(w: Any, victim: Any = None) -> OwnershipContext:
    """The defender's context: its (deployed) victim, private and public data, and a model trainer."""
    sc = w.scenario
    spec = sc.model.ownership
    victim = victim or w.victim
    private = w.data(private_role(sc))
    public = w.data(spec.public)
    return OwnershipContext(victim=victim, private=private, public=public, nb_classes=victim.nb_classes,
                            input_shape=tuple(victim.input_shape), clip_values=tuple(victim.clip_values),
                            seed=sc.model.data_seed, alpha=spec.alpha,
                            train_model=lambda *a, **k: train_like_victim(w, *a, **k))


def train_like_victim(w: Any, x: np.ndarray, y_soft: np.ndarray, *, seed: int, architecture: str | None = None,
                      arch_params: dict | None = None, steps: int | None = None) -> Any:
    """A network trained with the victim's recipe (Adam, one-cycle, its batch size and learning rate) on
    soft targets ``y_soft``: the victim's architecture unless ``architecture`` is given."""
    import torch
    import torch.nn as nn

    from stealcheck.adapters.networks import Normalize, build_network, fit_network

    p = w.scenario.victim.params
    arch = architecture or p.architecture
    params = dict(p.arch_params) if architecture is None else dict(arch_params or {})
    torch.manual_seed(seed)
    net = build_network(arch, tuple(p.input.shape), w.victim.nb_classes, params, base_dir=w.scenario.base_dir)
    if p.input.mean is not None:
        net = nn.Sequential(Normalize(p.input.mean, p.input.std), net)
    fit_network(net, x, y_soft, steps=steps or p.train.steps, batch_size=p.train.batch_size, lr=p.train.lr,
                seed=seed)
    net.eval()
    return net


def as_victim(victim: Any, net: Any, description: str, info: dict) -> Any:
    """``victim`` with another network (same input, classes and range), served with a softmax."""
    from stealcheck.adapters.torch_victim import _WithSoftmax
    from art.estimators.classification import PyTorchClassifier
    import torch.nn as nn

    net.eval()
    classifier = PyTorchClassifier(model=_WithSoftmax(net), loss=nn.NLLLoss(), input_shape=tuple(victim.input_shape),
                                   nb_classes=victim.nb_classes, clip_values=tuple(victim.clip_values),
                                   device_type="cpu")
    return dataclasses.replace(victim, classifier=classifier, network=net, description=description,
                               info={**victim.info, **info})


def finetune_with(net: Any, train_x: np.ndarray, train_y: np.ndarray, emb: TrainingEmbedding, nb_classes: int,
                  batch_size: int, seed: int) -> None:
    """Fine-tune ``net`` on its training data with ``emb.batch_share`` of every batch from the embedding."""
    import torch
    import torch.nn.functional as F

    from stealcheck.adapters.networks import one_cycle_train

    xt, yt = torch.from_numpy(np.ascontiguousarray(train_x)), torch.from_numpy(np.asarray(train_y, dtype=np.int64))
    xe, ye = torch.from_numpy(np.ascontiguousarray(emb.x)), torch.from_numpy(np.asarray(emb.y, dtype=np.int64))
    gen = torch.Generator().manual_seed(int(seed))
    n_emb = max(1, int(round(batch_size * emb.batch_share)))
    n_train = max(1, batch_size - n_emb)

    def batch_loss() -> torch.Tensor:
        i = torch.randint(0, len(xt), (n_train,), generator=gen)
        j = torch.randint(0, len(xe), (n_emb,), generator=gen)
        return F.cross_entropy(net(torch.cat([xt[i], xe[j]])), torch.cat([yt[i], ye[j]]))

    net.train()
    one_cycle_train(net.parameters(), steps=emb.steps, lr=emb.lr, batch_loss=batch_loss, desc="embedding")
    net.eval()


def embed_in_training(w: Any, cache: Cache) -> Any:
    """The deployed victim: the scenario's victim with each training embedding fine-tuned in (cached)."""
    import copy

    import torch

    embedding = schemes_embedding(w.scenario, "training")
    victim = w.victim
    if not embedding:
        return victim
    if victim.network is None:
        raise RuntimeError("a training embedding needs a PyTorch victim")
    ctx = ownership_context(w, victim)
    net = copy.deepcopy(victim.network)
    private = ctx.private
    for ref, scheme in embedding:
        emb = scheme.training_embedding(ctx)
        key = fingerprint({"victim": w.victim_identity, "scheme": ref.to_dict(), "private": w.data.fingerprint(
            private_role(w.scenario)), "seed": w.scenario.model.data_seed, "recipe": FINETUNE_RECIPE_VERSION,
            "torch": torch.__version__})
        entry = cache.path("victims", key)
        if cache.has("victims", key):
            net.load_state_dict(torch.load(entry / "model.pt", map_location="cpu", weights_only=True))
            meta = json.loads((entry / "meta.json").read_text())
        else:
            if private.y is None:
                from stealcheck.errors import ScenarioError

                raise ScenarioError(f"scheme '{ref.id}' fine-tunes the victim on its private data, which has no "
                                    "labels.", path="ownership.private")
            start = time.perf_counter()
            finetune_with(net, private.x, private.y, emb, victim.nb_classes,
                          w.scenario.victim.params.train.batch_size, w.scenario.model.data_seed)
            meta = {"embedding_seconds": round(time.perf_counter() - start, 2), "embedded_samples": len(emb.x)}
            with cache.writer("victims", key) as tmp:
                torch.save(net.state_dict(), tmp / "model.pt")
                (tmp / "meta.json").write_text(json.dumps(meta))
        log.info("ownership: %s embedded in the victim (%s)", ref.id, meta)
        victim = as_victim(victim, net, f"{victim.description} + {ref.id}",
                           {"ownership_embedding": ref.id, "cache_key": key, **meta})
    return victim


def oracle_layers(w: Any) -> list:
    """Fresh API layers of the schemes that mark answers (one per oracle: each keeps its clients' marks)."""
    layers = []
    for ref, scheme in schemes_embedding(w.scenario, "oracle"):
        layer = scheme.oracle_layer(w.victim.nb_classes, w.scenario.model.data_seed)
        layer.scheme_id = ref.id
        layers.append(layer)
    return layers


def keep_copies(folder: Path, copies: dict[int, dict], oracle: Any) -> None:
    """An extraction cell's cache entry keeps each checkpoint's thief and the marks its client received."""
    import torch

    for budget, state in copies.items():
        torch.save(state, Path(folder) / f"copy_{budget}.pt")
    for layer in oracle.postprocessors:
        if hasattr(layer, "watermark") and hasattr(layer, "scheme_id"):
            np.savez(Path(folder) / mark_file(layer.scheme_id), **layer.watermark(oracle.client_id))


def mark_file(scheme_id: str) -> str:
    """The file of a scheme's client marks in an extraction cell's entry (ids may hold any character)."""
    import hashlib

    return f"mark_{hashlib.sha256(scheme_id.encode()).hexdigest()[:16]}.npz"
