"""The interactions cells: train each training-time variant, measure each deployment, judge the pairs.

A *deployment* is no defence, one member alone, or a pair. Its training-time members pick the variant of
the victim (trained by an ``interaction_model`` cell, cached under ``victims/``); its serving-time members
are layers of the API in front of it. The ``interaction`` cell measures:

- ``phi_acc``: the accuracy honest users get through the API (test set);
- ``robust_accuracy``: accuracy under ART's ProjectedGradientDescent, white-box on the variant's network;
- ``mi_advantage``: TPR - FPR of ART's MembershipInferenceBlackBox, which queries the API: the variant's
  training samples against the public set (half of each fits the attack model, half measures it);
- ``copy_fidelity``: the scenario's extraction attack (KnockoffNets in the shipped scenario) steals a copy
  through the API; its label agreement with the variant on the test set;
- ``epsilon``: DP-SGD's epsilon at its delta (Opacus' accountant), when DP-SGD is deployed;
- per active defence (``scheme`` column = its id): ``auroc`` of its detector, fitted on the variant, on the
  extraction attack's queries against the benign evaluation split, and the attacker's ``answered_share``;
- per ownership member (``scheme`` column = its id): ``trigger_accuracy`` (the backdoor's statistic
  through the API), ``ownership_confidence`` = 1 - p where the scheme is meant to be used (dataset
  inference and the backdoor: the deployed victim; fingerprints and DAWN: the stolen copy), and the
  other suspect's ``statistic`` and ``p_value`` under ``<id>@victim`` / ``<id>@copy``.

Rows are ``kind: interaction`` with the deployment's id in the defence column. The ``interaction_matrix``
cell applies the conflict rule (:mod:`.conflicts`) and writes ``kind: conflict`` rows and the matrix.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from stealcheck import registry
from stealcheck.cache import Cache, fingerprint
from stealcheck.seeds import attack_seed, derive_seed

from .conflicts import build_matrix, figure_key, format_matrix, matrix_rows
from .specs import FIGURES

log = logging.getLogger("stealcheck")

HONEST_BATCH = 32


def _deployment(w: Any, did: str) -> tuple:
    from stealcheck.interactions.specs import combination_id
    from stealcheck.plan import interaction_deployments

    return next(d for d in interaction_deployments(w.scenario) if combination_id(d) == did)


def _training_members(w: Any, tid: str) -> tuple:
    from stealcheck.interactions.specs import combination_id
    from stealcheck.plan import interaction_deployments

    for dep in interaction_deployments(w.scenario):
        train = tuple(m for m in dep if m.role == "training")
        if combination_id(train) == tid:
            return train
    raise KeyError(tid)


def _ownership_ctx(w: Any, victim: Any) -> Any:
    from stealcheck.ownership.base import OwnershipContext
    from stealcheck.ownership.deploy import train_like_victim

    spec = w.scenario.model.interactions
    return OwnershipContext(victim=victim, private=w.data(spec.private), public=w.data(spec.public),
                            nb_classes=victim.nb_classes, input_shape=tuple(victim.input_shape),
                            clip_values=tuple(victim.clip_values), seed=w.scenario.model.data_seed, alpha=spec.alpha,
                            train_model=lambda *a, **k: train_like_victim(w, *a, **k))


def _fresh_net(w: Any) -> Any:
    import torch

    from stealcheck.ownership.cells import build_net

    p = w.scenario.victim.params
    torch.manual_seed(derive_seed(w.scenario.model.data_seed, "interactions variant"))  # one init for every variant
    return build_net(w, p.architecture, dict(p.arch_params))


# ---------------------------------------------------------------- training-time variants


def interaction_model_cell(w: Any, cell: Any) -> Any:
    """Train the victim with the deployment's training-time defences (or load it from the cache)."""
    import torch

    from stealcheck.cells import CellResult
    from stealcheck.plan import interaction_recipe

    from .training import train_variant

    cache = Cache(w.ctx.cache_dir, read=not w.ctx.fresh)
    if cache.has("victims", cell.key):
        meta = json.loads((cache.path("victims", cell.key) / "meta.json").read_text())
        return CellResult(cell.name, cell.label, summary={"interaction_models": {cell.defence: meta}},
                          from_cache=True)
    members = _training_members(w, cell.defence)
    spec = w.scenario.model.interactions
    private = w.data(spec.private)
    dp = next((m.params for m in members if m.plugin == "dp_sgd"), None)
    adversarial = next((m.params for m in members if m.plugin == "adversarial_training"), None)
    embedding = None
    for m in members:
        if m.registry == "ownership":
            scheme = registry.ownership.get(m.plugin).obj(m.params)
            embedding = scheme.training_embedding(_ownership_ctx(w, w.victim))
    recipe = interaction_recipe(w.scenario)
    net = _fresh_net(w)
    v = w.victim
    meta = train_variant(net, private.x, private.y, nb_classes=v.nb_classes, input_shape=v.input_shape,
                         clip_values=v.clip_values, steps=recipe["steps"], batch_size=recipe["batch_size"],
                         lr=recipe["lr"], seed=derive_seed(w.scenario.model.data_seed, "interactions training"),
                         dp=dp, adversarial=adversarial, embedding=embedding)
    meta["members"] = [m.id for m in members]
    with cache.writer("victims", cell.key) as tmp:
        torch.save(net.state_dict(), tmp / "model.pt")
        (tmp / "meta.json").write_text(json.dumps(meta))
    log.info("interactions: variant %s trained (%s)", cell.defence, meta)
    return CellResult(cell.name, cell.label, summary={"interaction_models": {cell.defence: meta}})


def load_variant(w: Any, key: str, name: str) -> tuple[Any, dict]:
    """The variant's network served like the victim, and its training record."""
    from stealcheck.ownership.cells import _load
    from stealcheck.ownership.deploy import as_victim

    entry = Cache(w.ctx.cache_dir).path("victims", key)
    meta = json.loads((entry / "meta.json").read_text())
    net = _load(_fresh_net(w), entry / "model.pt")
    return as_victim(w.victim, net, f"{w.victim.description} [{name}]", {"cache_key": key, **meta}), meta


# ---------------------------------------------------------------- measuring one deployment


def _fitted_detectors(w: Any, victim: Any, model_key: str) -> dict:
    """The scenario's detectors fitted on this variant (cached under ``detectors/`` by the variant's key)."""
    from stealcheck import detection_track as dt

    cache = Cache(w.ctx.cache_dir, read=not w.ctx.fresh)
    dctx = dt.detector_context(victim, w.defender, cache, model_key, w.scenario.model.data_seed, False)
    return dt.fit_detectors(w.scenario, dctx, cache, model_key, w.ctx.version)


def _serving_layers(w: Any, dep: tuple, fitted: dict | None = None) -> list:
    """The API's layers in the order of ``World.oracle``: an active defence first (it sees the queries), then
    output perturbations, then an API watermark (DAWN marks what the client finally receives)."""
    order = {"serving:active": 0, "serving:answers": 1, "serving:mark": 2}
    layers = []
    for m in sorted((m for m in dep if m.role == "serving"), key=lambda m: order[m.slot]):
        info = registry.defences.get(m.plugin) if m.registry == "defences" else None
        if info is not None and info.caps.needs_detector:
            f = fitted[m.params.detector]
            active = list(info.obj.build(m.params, w.victim.nb_classes, detector=f.detector,
                                         calibration_scores=f.calibration_scores))
            for layer in active:
                layer.member_id = m.id
            layers += active
        elif info is not None:
            layers += list(info.obj.build(m.params, w.victim.nb_classes))
        else:
            layer = registry.ownership.get(m.plugin).obj(m.params).oracle_layer(w.victim.nb_classes,
                                                                               w.scenario.model.data_seed)
            layer.scheme_id = m.id
            layers.append(layer)
    return layers


def robust_accuracy(victim: Any, x: np.ndarray, y: np.ndarray, spec: Any) -> float:
    """Accuracy of the victim's network on ART PGD adversarial examples of ``x`` (white-box, L-infinity)."""
    from art.attacks.evasion import ProjectedGradientDescent

    pgd = ProjectedGradientDescent(victim.classifier, norm=np.inf, eps=spec.eps, eps_step=spec.eps_step,
                                   max_iter=spec.max_iter, num_random_init=0, batch_size=128, verbose=False)
    x_adv = pgd.generate(np.ascontiguousarray(x, dtype=np.float32), y=_one_hot(y, victim.nb_classes))
    return float(np.mean(victim.predict_proba(x_adv).argmax(1) == y))


def _one_hot(y: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(y), k), dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0
    return out


def mi_advantage(api_predict, victim: Any, members: Any, nonmembers: Any, spec: Any, seed: int) -> dict:
    """ART's MembershipInferenceBlackBox through the API: TPR - FPR on the held-out halves."""
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.classification import BlackBoxClassifier

    rng = np.random.default_rng(seed)
    n = min(spec.samples, len(members), len(nonmembers))
    im, inn = rng.permutation(len(members))[:n], rng.permutation(len(nonmembers))[:n]
    xm, ym = members.x[im], members.y[im]
    xn, yn = nonmembers.x[inn], nonmembers.y[inn]
    h = n // 2
    estimator = BlackBoxClassifier(api_predict, tuple(victim.input_shape), victim.nb_classes,
                                   clip_values=tuple(victim.clip_values))
    attack = MembershipInferenceBlackBox(estimator, input_type="prediction", attack_model_type=spec.attack_model)
    np.random.seed(seed)  # ART's attack models (random forest) draw from numpy's global generator
    yk = lambda y: _one_hot(y, victim.nb_classes)  # noqa: E731
    attack.fit(x=xm[:h], y=yk(ym[:h]), test_x=xn[:h], test_y=yk(yn[:h]))
    tpr = float(np.mean(attack.infer(xm[h:], yk(ym[h:]))))
    fpr = float(np.mean(attack.infer(xn[h:], yk(yn[h:]))))
    return {"mi_advantage": tpr - fpr, "mi_tpr": tpr, "mi_fpr": fpr}


def _evidence(w: Any, scheme: Any, member: Any, model_key: str, victim: Any) -> Any:
    """A scheme's evidence for one variant, prepared once (cached: fingerprints train models to prepare)."""
    from stealcheck.ownership.base import Evidence

    cache = Cache(w.ctx.cache_dir, read=not w.ctx.fresh)
    key = fingerprint({"interaction_evidence": member.to_dict(), "model": model_key, "version": w.ctx.version})
    if cache.has("cells", key):
        entry = cache.path("cells", key)
        with np.load(entry / "evidence.npz") as z:
            arrays = {k: z[k] for k in z.files}
        return Evidence(arrays, json.loads((entry / "values.json").read_text()))
    evidence = scheme.prepare(_ownership_ctx(w, victim))
    with cache.writer("cells", key) as tmp:
        np.savez(tmp / "evidence.npz", **evidence.arrays)
        (tmp / "values.json").write_text(json.dumps(evidence.values, default=float))
    return evidence


def interaction_cell(w: Any, cell: Any) -> Any:
    """Serve, attack and measure one deployment."""
    from stealcheck.cells import CellResult
    from stealcheck.oracle import Oracle
    from stealcheck.ownership.base import Suspect
    from stealcheck.ownership.cells import _client_evidence
    from stealcheck.scenario import extraction_attack

    cache = Cache(w.ctx.cache_dir, read=not w.ctx.fresh)
    if cell.cached and cache.has("cells", cell.key):
        rows = json.loads((cache.path("cells", cell.key) / "rows.json").read_text())
        return CellResult(cell.name, cell.label, rows, from_cache=True)
    sc = w.scenario
    spec = sc.model.interactions
    seed = sc.model.data_seed
    dep = _deployment(w, cell.defence)
    model_key = cell.deps[1]
    victim, meta = load_variant(w, model_key, cell.defence)
    active = [m for m in dep if m.slot == "serving:active"]
    fitted = _fitted_detectors(w, victim, model_key) if active else None
    layers = _serving_layers(w, dep, fitted)
    test = w.test if spec.test_samples is None else w.test.subset(np.arange(min(len(w.test), spec.test_samples)))

    # as World.oracle: a detector that replaces the victim (EDM, OE) serves the answers behind its active defence
    answer = victim.predict_proba
    for m in active:
        if fitted[m.params.detector].detector.replaces_victim:
            answer = fitted[m.params.detector].detector.serving_predict

    def api(budget: int | None = None, client: str = "honest-users") -> Oracle:
        return Oracle(answer, tuple(victim.input_shape), victim.nb_classes, tuple(victim.clip_values),
                      postprocessors=layers, output_mode=sc.victim.output, top_k=sc.victim.top_k, budget=budget,
                      client_id=client)

    t0 = time.perf_counter()
    figures: dict[str, float] = {}
    honest = api()
    answers = np.concatenate([honest.predict(test.x[i:i + HONEST_BATCH]) for i in range(0, len(test), HONEST_BATCH)])
    figures["phi_acc"] = float(np.mean(answers.argmax(1) == test.y))
    raw_test = victim.predict_proba(test.x)
    figures["raw_accuracy"] = float(np.mean(raw_test.argmax(1) == test.y))
    n_rob = min(spec.robustness.samples, len(test))
    figures["robust_accuracy"] = robust_accuracy(victim, test.x[:n_rob], test.y[:n_rob], spec.robustness)
    mi_api = api(client="mi-attacker")
    figures.update(mi_advantage(lambda x: mi_api.predict(x), victim, w.data(spec.private), w.data(spec.public),
                                spec.membership, derive_seed(seed, "interactions membership")))
    if "epsilon" in meta:
        figures["epsilon"] = float(meta["epsilon"])
        figures["noise_multiplier"] = float(meta["noise_multiplier"])

    # The extraction attack through the API (one client, "attacker"), to its budget.
    a = extraction_attack(sc)
    budget = spec.extraction.budget or max(sc.budgets_of(a))
    oracle = api(budget, client="attacker")
    from stealcheck.attacks.base import seed_everything

    seed_everything(derive_seed(seed, "interactions extraction", cell.defence))
    ctx = w.attack_context(oracle, [budget], attack_seed(seed, sc.model.seeds[0], a.id))
    thief = None
    for _, thief in registry.attacks.get(a.plugin).obj(a.params).run(ctx):
        pass
    copy_labels = thief.predict_proba(test.x).argmax(1)
    figures["copy_fidelity"] = float(np.mean(copy_labels == raw_test.argmax(1)))
    figures["copy_accuracy"] = float(np.mean(copy_labels == test.y))
    for m in active:  # the detector behind an active defence: the attack's queries against benign ones
        from stealcheck.detection import auroc

        det = fitted[m.params.detector].detector
        attack_x = oracle.clients["attacker"].inputs()
        if det.per_client or len(attack_x) == 0:
            figures[figure_key(m.id, "auroc")] = float("nan")
        else:
            benign = np.asarray(det.score(w.defender.evaluation.x), dtype=np.float64)
            figures[figure_key(m.id, "auroc")] = float(auroc(benign, np.asarray(det.score(attack_x), dtype=np.float64)))
        figures["answered_share"] = float(oracle.clients["attacker"].answered_share)

    # Ownership members: where each is meant to be used, and the other suspect as a raw figure.
    owner = api(client="owner")
    served = Suspect("victim", lambda x: owner.predict(x), tuple(victim.input_shape), victim.nb_classes,
                     tuple(victim.clip_values), network=victim.network if not layers else None, group="victim")
    copy = Suspect("copy", thief.predict_proba, tuple(victim.input_shape), victim.nb_classes,
                   tuple(victim.clip_values), network=getattr(thief, "net", None), group="copy")
    octx = _ownership_ctx(w, victim)
    raw: dict[str, dict] = {}
    for m in dep:
        if m.registry != "ownership":
            continue
        scheme = registry.ownership.get(m.plugin).obj(m.params)
        if m.plugin == "dawn":
            layer = next(x for x in layers if getattr(x, "scheme_id", None) == m.id)
            evidence, primary, other = _client_evidence(layer.watermark("attacker"), budget), copy, None
        else:
            evidence = _evidence(w, scheme, m, model_key, victim) if m.plugin != "backdoor" else scheme.prepare(octx)
            primary, other = (copy, served) if m.plugin == "fingerprint" else (served, copy)
        verdict = scheme.verify(primary, evidence, octx)
        figures[figure_key(m.id, "ownership_confidence")] = 1.0 - float(verdict.p_value)
        if m.plugin == "backdoor":
            figures[figure_key(m.id, "trigger_accuracy")] = float(verdict.statistic)
        raw[f"{m.id}@{primary.name}"] = {"statistic": verdict.statistic, "p_value": verdict.p_value}
        if other is not None:
            v2 = scheme.verify(other, evidence, octx)
            raw[f"{m.id}@{other.name}"] = {"statistic": v2.statistic, "p_value": v2.p_value}
    figures["measure_seconds"] = round(time.perf_counter() - t0, 2)

    rows = []

    def row(metric: str, value: float, scheme: str = "") -> None:
        rows.append({"kind": "interaction", "victim": victim.description, "defence": cell.defence, "attack": "",
                     "budget": "", "seed": "", "metric": metric, "value": float(value), "scheme": scheme})

    for key, value in figures.items():
        name, _, member = key.partition("@")
        row(name, value, member)
    for suspect, values in raw.items():
        for k, v in values.items():
            row(k, v, suspect)
    log.info("interactions: %s measured: %s", cell.defence,
             ", ".join(f"{k} {v:.4f}" for k, v in figures.items() if isinstance(v, float)))
    if cell.cached:
        with cache.writer("cells", cell.key) as tmp:
            (tmp / "rows.json").write_text(json.dumps(rows))
            (tmp / "figures.json").write_text(json.dumps(figures))
    return CellResult(cell.name, cell.label, rows)


# ---------------------------------------------------------------- the conflict matrix


def matrix_of(w: Any) -> dict:
    """The conflict matrix of the run's deployments (every interaction cell's figures from the cache)."""
    from stealcheck.plan import plan
    from stealcheck.scenario import interaction_pairs

    sc = w.scenario
    spec = sc.model.interactions
    figures = {}
    for c in plan(sc, w.ctx.version):
        if c.kind == "interaction":
            path = Cache(w.ctx.cache_dir).path("cells", c.key) / "figures.json"
            if path.exists():
                figures[c.defence] = json.loads(path.read_text())
    pairs, skipped = interaction_pairs(spec, sc.interactions)
    members = [{**m.to_dict(), "symbols": [m.symbol(f) for f in m.figures]} for m in sc.interactions]
    tolerances = spec.tolerances.model_dump()
    matrix = build_matrix(members, figures, tolerances, list(spec.risks), pairs, skipped, spec.accuracy_reference)
    matrix["figure_docs"] = {k: {"symbol": f.symbol, "higher_is_better": f.higher_is_better, "doc": f.doc}
                             for k, f in FIGURES.items()}
    return matrix


def interaction_matrix_cell(w: Any, cell: Any) -> Any:
    from stealcheck.cells import CellResult

    matrix = matrix_of(w)
    rows = [{**r, "kind": "conflict"} for r in matrix_rows(matrix, w.victim.description)]
    log.info("interactions: conflict matrix\n%s", format_matrix(matrix))
    return CellResult(cell.name, cell.label, rows, summary={"interactions": matrix},
                      files={"interactions.json": json.dumps(matrix, indent=1, default=float)})


__all__ = ["interaction_model_cell", "interaction_cell", "interaction_matrix_cell", "matrix_of"]
