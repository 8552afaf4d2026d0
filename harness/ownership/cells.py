"""The ownership cells: the independent models (trained once), then one cell per scheme that prepares its
evidence and verifies every suspect: each stolen copy the extraction cells kept, the independent models
and the victim, plus the false claims against the scheme.

Rows are ``kind: ownership`` with the scheme's id in the ``scheme`` column. Suspect rows carry the
copy's defence, attack, budget and seed (independent models: ``attack`` = ``independent:<name>``; the
victim: ``victim``) and the metrics ``statistic``, ``p_value``, ``detected``, ``verification_queries``
(and ``copy_fidelity`` for copies). Cost rows have an empty attack: ``accuracy_before``,
``accuracy_after``, ``accuracy_cost``. False-claim rows: ``attack`` = ``false_claim:<independent>``
or ``false_claim`` (the success rate), ``defence`` = the mitigation (``none``, ``commitment``,
``verifier_generated``).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np

from stealcheck import registry
from stealcheck.cache import Cache
from stealcheck.scenario import private_role
from stealcheck.seeds import derive_seed

from .base import Evidence, OwnershipContext, Suspect, Verdict
from .deploy import mark_file, ownership_context, train_like_victim

log = logging.getLogger("stealcheck")

# ---------------------------------------------------------------- networks as suspects


def predict_fn(net: Any):
    """x -> softmax probabilities of a torch network (logits out)."""
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        net.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), 512):
                out.append(torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x[i:i + 512], dtype=np.float32)))
                                         .double(), dim=1).numpy())
        return np.concatenate(out) if out else np.empty((0, 0))

    return predict


def build_net(w: Any, architecture: str, arch_params: dict) -> Any:
    import torch.nn as nn

    from stealcheck.adapters.networks import Normalize, build_network

    p = w.scenario.victim.params
    net = build_network(architecture, tuple(p.input.shape), w.victim.nb_classes, arch_params,
                        base_dir=w.scenario.base_dir)
    return nn.Sequential(Normalize(p.input.mean, p.input.std), net) if p.input.mean is not None else net


def _load(net: Any, path) -> Any:
    import torch

    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    return net


def as_suspect(w: Any, name: str, net: Any, group: str, info: dict | None = None) -> Suspect:
    v = w.victim
    return Suspect(name, predict_fn(net), tuple(v.input_shape), v.nb_classes, tuple(v.clip_values), network=net,
                   group=group, info=info)


# ---------------------------------------------------------------- the independent models


def _independent_specs(w: Any) -> dict[str, dict]:
    """name -> (data role, architecture or None for the victim's, seed) of each model the cell trains."""
    sc = w.scenario
    spec = sc.model.ownership
    same = spec.independent_data or private_role(sc)
    victim_arch = sc.victim.params.architecture
    other = spec.other_architecture or ("conv3" if victim_arch == "mlp" else "mlp")
    out = {}
    for kind in spec.independent:
        role = "attacker" if kind == "proxy" else same
        out[kind] = {"data": role, "architecture": other if kind == "other_arch" else None}
    if spec.false_claims.enabled and any(registry.ownership.get(r.plugin).caps.false_claims(r.params)
                                         for r in sc.ownership):
        out["accuser"] = {"data": spec.false_claims.accuser_data or "attacker", "architecture": None}
    return out


def ownership_models_cell(w: Any, cell: Any) -> Any:
    """Train the independent models (and the false claims' accuser), or load them from the cache."""
    import torch

    from stealcheck.adapters.networks import one_hot
    from stealcheck.cells import CellResult

    cache = Cache(w.ctx.cache_dir, read=not w.ctx.fresh)
    if cache.has("cells", cell.key):
        meta = json.loads((cache.path("cells", cell.key) / "models.json").read_text())
        return CellResult(cell.name, cell.label, summary={"ownership_models": meta}, from_cache=True)
    meta = {}
    nets = {}
    for name, spec in _independent_specs(w).items():
        data = w.data(spec["data"])
        if data.y is None:
            from stealcheck.errors import ScenarioError

            raise ScenarioError(f"the independent model '{name}' trains on data set '{spec['data']}', which has no "
                                "labels.", path="ownership")
        start = time.perf_counter()
        arch = spec["architecture"]
        net = train_like_victim(w, data.x, one_hot(data.y, w.victim.nb_classes),
                                seed=derive_seed(w.scenario.model.data_seed, "independent model", name),
                                architecture=arch, arch_params={})
        acc = float(np.mean(predict_fn(net)(w.test.x).argmax(1) == w.test.y)) if w.test.y is not None else None
        p = w.scenario.victim.params
        meta[name] = {"architecture": arch or p.architecture, "arch_params": {} if arch else dict(p.arch_params),
                      "data": spec["data"], "train_samples": len(data), "test_accuracy": acc,
                      "train_seconds": round(time.perf_counter() - start, 2),
                      "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds")}
        nets[name] = net
        log.info("ownership: independent model %s trained (%s, accuracy %.4f)", name, meta[name]["architecture"],
                 acc if acc is not None else float("nan"))
    with cache.writer("cells", cell.key) as tmp:
        for name, net in nets.items():
            torch.save(net.state_dict(), tmp / f"model_{name}.pt")
        (tmp / "models.json").write_text(json.dumps(meta))
    return CellResult(cell.name, cell.label, summary={"ownership_models": meta})


def load_models(w: Any, key: str) -> tuple[dict[str, Any], dict[str, dict]]:
    """The models cell's networks and their records."""
    entry = Cache(w.ctx.cache_dir).path("cells", key)
    meta = json.loads((entry / "models.json").read_text())
    nets = {name: _load(build_net(w, m["architecture"], m["arch_params"]), entry / f"model_{name}.pt")
            for name, m in meta.items()}
    return nets, meta


# ---------------------------------------------------------------- one scheme


def _rows(w: Any, scheme_id: str, defence: str, attack: str, budget: Any, seed: Any, values: dict) -> list[dict]:
    return [{"kind": "ownership", "victim": w.victim.description, "defence": defence, "attack": attack,
             "budget": budget, "seed": seed, "scheme": scheme_id, "metric": k, "value": float(v)}
            for k, v in values.items()]


def _verdict_values(v: Verdict, alpha: float) -> dict:
    return {"statistic": v.statistic, "p_value": v.p_value, "detected": float(v.detected(alpha)),
            "verification_queries": v.queries}


def _accuracy(probs: np.ndarray, y: np.ndarray | None) -> float:
    return float(np.mean(probs.argmax(1) == y)) if y is not None else float("nan")


def ownership_cell(w: Any, cell: Any) -> Any:
    """Prepare one scheme's evidence and verify every suspect with it; the false claims against it."""
    from stealcheck.cells import CellResult
    from stealcheck.plan import plan

    cache = Cache(w.ctx.cache_dir, read=not w.ctx.fresh)
    if cell.cached and cache.has("cells", cell.key):
        rows = json.loads((cache.path("cells", cell.key) / "rows.json").read_text())
        return CellResult(cell.name, cell.label, rows, from_cache=True)
    sc = w.scenario
    spec = sc.model.ownership
    alpha = spec.alpha
    ref = next(r for r in sc.ownership if r.id == cell.attack)
    info = registry.ownership.get(ref.plugin)
    scheme = info.obj(ref.params)
    embeds = info.caps.embeds(ref.params)
    ctx = ownership_context(w)
    cells = plan(sc, w.ctx.version)
    extraction = [c for c in cells if c.kind == "extraction"]
    models_cell = next(c for c in cells if c.kind == "ownership_models")
    t0 = time.perf_counter()
    evidence = scheme.prepare(ctx)
    prepare_seconds = time.perf_counter() - t0
    log.info("ownership: %s prepared (%.1fs)", ref.id, prepare_seconds)
    rows: list[dict] = []

    # The cost to honest users: the scenario's victim against what the scheme serves.
    # A training mark: the victim before and after it; an API mark: the deployed victim's raw answers and
    # what the API serves honest users; a scheme that only observes costs nothing.
    before = after = _accuracy(w.raw_test, w.test.y)
    if embeds == "training":
        before = _accuracy(w.clean_victim.predict_proba(w.test.x), w.test.y)
    elif embeds == "oracle":
        layer = scheme.oracle_layer(w.victim.nb_classes, sc.model.data_seed)
        after = _accuracy(layer.change(w.test.x, w.raw_test, "honest-users")[0], w.test.y)
    rows += _rows(w, ref.id, "", "", "", "", {"accuracy_before": before, "accuracy_after": after,
                                                "accuracy_cost": before - after,
                                                "embedding_seconds": w.victim.info.get("embedding_seconds", 0.0)
                                                if embeds == "training" else 0.0})

    marks: dict[str, dict[str, np.ndarray]] = {}  # extraction cell -> its client's marks (oracle schemes)
    for c in extraction:
        entry = Cache(w.ctx.cache_dir).path("cells", c.key)
        if embeds == "oracle":
            with np.load(entry / mark_file(ref.id)) as z:
                marks[c.name] = {k: z[k] for k in z.files}
        fidelity = {int(r["budget"]): r["value"] for r in json.loads((entry / "rows.json").read_text())
                    if r["metric"] == "fidelity"}
        a = next(a for a in sc.attacks if a.id == c.attack)
        for b in sc.budgets_of(a):
            if spec.budgets is not None and b not in spec.budgets:
                continue
            path = entry / f"copy_{b}.pt"
            if not path.exists():
                log.warning("ownership: %s has no kept copy at budget %d (not a torch thief); skipped", c.label, b)
                continue
            suspect = as_suspect(w, f"{c.attack}@{b}", _load(build_net(w, w.thief_arch, w.thief_arch_params), path),
                                 "copy")
            ev = _client_evidence(marks[c.name], b) if embeds == "oracle" else evidence
            verdict = scheme.verify(suspect, ev, ctx)
            rows += _rows(w, ref.id, c.defence, c.attack, b, c.seed,
                          {**_verdict_values(verdict, alpha), "copy_fidelity": fidelity.get(b, float("nan"))})
            log.info("ownership: %s on %s x %s seed %s @ %d: statistic %.4f, p %.3g (fidelity %.4f)", ref.id,
                     c.attack, c.defence, c.seed, b, verdict.statistic, verdict.p_value, fidelity.get(b, float("nan")))

    nets, meta = load_models(w, models_cell.key)
    independents = {n: net for n, net in nets.items() if n != "accuser"}
    for name, net in independents.items():
        suspect_name = f"independent:{name}"
        if embeds == "oracle":  # tested against every client's marks: would it be taken for that client's copy?
            for c in extraction:
                b = max(sc.budgets_of(next(a for a in sc.attacks if a.id == c.attack)))
                verdict = scheme.verify(as_suspect(w, suspect_name, net, "independent"),
                                        _client_evidence(marks[c.name], b), ctx)
                rows += _rows(w, ref.id, c.defence, suspect_name, b, c.seed, _verdict_values(verdict, alpha))
        else:
            verdict = scheme.verify(as_suspect(w, suspect_name, net, "independent"), evidence, ctx)
            rows += _rows(w, ref.id, "", suspect_name, "", "", _verdict_values(verdict, alpha))
    # The victim itself, as deployed (for an API mark: as the API answers the first extraction cell's client).
    if embeds == "oracle" and extraction:
        c = extraction[0]
        layer = scheme.oracle_layer(w.victim.nb_classes, sc.model.data_seed)
        served = Suspect("victim", lambda x: layer.change(x, w.victim.predict_proba(x), c.name)[0],
                         tuple(w.victim.input_shape), w.victim.nb_classes, tuple(w.victim.clip_values), group="victim")
        b = max(sc.budgets_of(next(a for a in sc.attacks if a.id == c.attack)))
        verdict = scheme.verify(served, _client_evidence(marks[c.name], b), ctx)
    else:
        verdict = scheme.verify(Suspect("victim", w.victim.predict_proba, tuple(w.victim.input_shape),
                                        w.victim.nb_classes, tuple(w.victim.clip_values), network=w.victim.network,
                                        group="victim"), evidence, ctx)
    rows += _rows(w, ref.id, "", "victim", "", "", _verdict_values(verdict, alpha))

    if spec.false_claims.enabled and info.caps.false_claims(ref.params) and "accuser" in nets:
        from .false_claims import false_claim_rows

        rows += false_claim_rows(w, ref.id, scheme, ctx, nets["accuser"], independents, meta)
    if cell.cached:
        with cache.writer("cells", cell.key) as tmp:
            (tmp / "rows.json").write_text(json.dumps(rows))
    return CellResult(cell.name, cell.label, rows)


def _client_evidence(marks: dict[str, np.ndarray], budget: int) -> Evidence:
    """A client's marks among its first ``budget`` queries (what the copy at that checkpoint was trained on)."""
    keep = marks["index"] < budget
    x = marks["x"][keep] if len(marks["index"]) else marks["x"]
    return Evidence({"x": x, "label": marks["label"][keep]})


__all__ = ["ownership_cell", "ownership_models_cell", "OwnershipContext"]
