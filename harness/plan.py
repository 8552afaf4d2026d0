"""A run as a plan of cells: what each cell computes, what it depends on, and its content address.

``plan(scenario)`` is pure: it reads the scenario (and the digest of a victim's model file, which
is part of what the victim is), never trains or loads anything. Each cell's ``key`` is a
fingerprint of everything that determines its results, chained through the keys of the cells it
depends on, so a changed victim or detector changes the key of every cell downstream of it.

Cells, in the order the local executor runs them:

- ``victim``: build (train or load) the victim. It runs before the run folder exists, because it
  is also the last of the pre-run checks, so it is neither journalled nor counted as progress;
- ``detectors``: fit every detector (cached under ``detectors/``) and measure their cost;
- ``utility``: one per defence, what honest users get;
- ``extraction``: one per seed x defence x attack, the attack at every budget checkpoint;
- ``detection``: one per scored attack, its real queries scored by every detector;
- ``ownership_models``: the independent models the ownership schemes are tested on (and the false
  claims' accuser), trained once;
- ``ownership``: one per ownership scheme, verifying every stolen copy of the extraction cells, the
  independent models and the victim, and the false claims against the scheme;
- ``interaction_model``: one per set of training-time defences the interactions section deploys (none,
  each alone, each pair): the victim trained with them (cached under ``victims/``);
- ``interaction``: one per deployment (no defence, each defence alone, each pair): the variant served
  through its serving-time defences, attacked and measured;
- ``interaction_matrix``: the conflict rule over every deployment's figures (always runs: it is cheap).

A scheme that embeds a mark (a watermark trained into the victim, DAWN at the API) is part of the
deployment the attacks steal from: it is in the victim cell's key, so every cell downstream changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import registry
from .cache import Cache, file_digest, fingerprint
from .results import cell_key
from .scenario import PluginRef, Scenario

#: Where a cell's reusable result lives in the cache (absent: the cell always runs; its rows are
#: timings or cheap to recompute).
STORE = {"victim": "cells", "detectors": "cells", "extraction": "cells", "detection": "queries",
         "ownership_models": "cells", "ownership": "cells", "interaction_model": "victims", "interaction": "cells"}


@dataclass(frozen=True)
class Cell:
    """One unit of work of a run."""

    kind: str  # victim | detectors | utility | extraction | detection | ownership_models | ownership | interaction_*
    name: str  # the journal key (results.cell_key), unique in a run
    label: str  # what the progress output calls it
    key: str  # content address: a fingerprint of everything that determines the cell's results
    deps: tuple[str, ...] = ()  # keys of the cells whose artefacts this one reads
    defence: str = ""
    attack: str = ""
    seed: int | None = None
    cached: bool = True  # False: its results are not stored (scenario output.cache_cells: false)

    @property
    def journalled(self) -> bool:
        """Whether the cell's end is journalled and counted as progress (all but the victim)."""
        return self.kind != "victim"

    def status(self, cache: Cache) -> str:
        """'cached' when its reusable result is in ``cache``, else 'to run'."""
        store = STORE.get(self.kind)
        return "cached" if store and self.cached and cache.has(store, self.key) else "to run"


def data_fingerprint(scenario: Scenario, role: str) -> dict:
    """What determines the data set ``role`` (its source, params, the data seed, the input shape)."""
    ref = scenario.data[role]
    spec = scenario.victim.params.input
    return {"source": ref.source, "params": ref.params.model_dump(mode="json"), "seed": scenario.model.data_seed,
            "shape": list(spec.shape), "range": list(spec.range)}


def detection_attacks(scenario: Scenario) -> list[PluginRef]:
    """The attacks whose queries the detection track scores."""
    chosen = scenario.model.detection.attacks
    return [a for a in scenario.attacks if chosen is None or a.id in chosen]


def uses_detectors(a: PluginRef) -> bool:
    """Whether an attack reads the deployed detectors' scores (an adaptive attacker)."""
    return bool(registry.attacks.get(a.plugin).caps.detector_refs(a.params))


def driven_defences(scenario: Scenario) -> set[str]:
    """The defences driven by a detector (active defences)."""
    return {d.id for d in scenario.defences if registry.defences.get(d.plugin).caps.needs_detector}


def extraction_metric_names() -> list[str]:
    return sorted(i.name for i in registry.metrics.items()
                  if i.caps.scope == "extraction" and not i.caps.computed_by_runner)


def plan(scenario: Scenario, version: str | None = None) -> list[Cell]:
    """Every cell of a run of ``scenario``, dependencies before dependants; ``version`` is stealcheck's
    (a new version may compute differently, so it is part of every key)."""
    m = scenario.model
    data = {role: data_fingerprint(scenario, role) for role in sorted(scenario.data)}
    deployment = {"victim": scenario.victim.to_dict(), "data": data, "files": _victim_files(scenario), "version": version}
    if ownership_embedding(scenario):
        deployment["ownership_embedding"] = ownership_embedding(scenario)
    victim = Cell("victim", "victim", f"victim {scenario.victim.kind}", fingerprint(deployment))
    cells = [victim]
    detectors = None
    if scenario.detectors:
        detectors = Cell("detectors", cell_key("detectors", ""), "detectors: fit and cost", fingerprint(
            {"victim": victim.key, "detectors": [r.to_dict() for r in scenario.detectors],
             "detection": m.detection.model_dump(mode="json"), "data": data, "version": version}), (victim.key,))
        cells.append(detectors)
    driven = driven_defences(scenario)
    # A remote victim can change behind its address: its cells are recomputed every run (not reused).
    cache_cells = m.output.cache_cells and not registry.victims.get(scenario.victim.kind).caps.remote

    def needs(detector_user: bool) -> tuple[str, ...]:
        return (victim.key, detectors.key) if detector_user and detectors else (victim.key,)

    for d in scenario.defences:
        cells.append(Cell("utility", cell_key("utility", d.id), f"utility of {d.id}", fingerprint(
            {"utility": d.to_dict(), "victim": victim.key, "deps": needs(d.id in driven)}),
            needs(d.id in driven), defence=d.id))
    common = {"victim": victim.key, "output": [scenario.victim.output, scenario.victim.top_k],
              "thief": m.thief.model_dump(mode="json"), "data": data, "version": version}
    if scenario.ownership:
        common["keeps_copies"] = True  # the cell keeps each checkpoint's thief for the ownership cells
        common["client"] = "one per cell"  # and is its own API client
    for seed in m.seeds:
        for d in scenario.defences:
            for a in scenario.attacks:
                deps = needs(d.id in driven or uses_detectors(a))
                key = fingerprint({**common, "defence": d.to_dict(), "attack": a.to_dict(), "seed": seed,
                                   "budgets": scenario.budgets_of(a), "evaluation": m.evaluation.model_dump(),
                                   "metrics": extraction_metric_names(), "deps": deps})
                cells.append(Cell("extraction", cell_key("extraction", d.id, a.id, seed), f"{a.id} x {d.id} seed {seed}",
                                  key, deps, d.id, a.id, seed, cached=cache_cells))
    if detectors:
        seed = m.seeds[0]
        for a in detection_attacks(scenario):
            # The key addresses the attack's recorded queries; scoring them is cheap and always redone.
            key = fingerprint({**common, "attack": a.to_dict(), "seed": seed,
                               "budgets": list(m.detection.budgets), "deps": needs(uses_detectors(a))})
            cells.append(Cell("detection", cell_key("detection", "", a.id, seed), f"detection: {a.id}", key,
                              (victim.key, detectors.key), attack=a.id, seed=seed))
    if scenario.ownership:
        cells += _ownership_cells(scenario, victim, [c for c in cells if c.kind == "extraction"], data, version)
    if scenario.interactions:
        cells += _interaction_cells(scenario, victim, data, version)
    return cells


def interaction_recipe(scenario: Scenario) -> dict:
    """The training recipe of every interactions variant (the section's, else the victim's)."""
    own, victim = scenario.model.interactions.train, scenario.victim.params.train
    return {"steps": own.steps or victim.steps, "batch_size": own.batch_size or victim.batch_size,
            "lr": own.lr or victim.lr}


def interaction_deployments(scenario: Scenario) -> list[tuple]:
    """Every deployment of the interactions section as a tuple of members: (), each alone, each pair."""
    from .scenario import interaction_pairs

    members = scenario.interactions
    by_id = {m.id: m for m in members}
    pairs, _ = interaction_pairs(scenario.model.interactions, members)
    return [()] + [(m,) for m in members] + [(by_id[a], by_id[b]) for a, b in pairs]


def _interaction_cells(scenario: Scenario, victim: Cell, data: dict, version: str | None) -> list[Cell]:
    from .interactions.specs import combination_id
    from .scenario import extraction_attack

    spec = scenario.model.interactions
    recipe = interaction_recipe(scenario)
    models: dict[str, Cell] = {}
    deployments = interaction_deployments(scenario)
    for dep in deployments:
        train = tuple(m for m in dep if m.role == "training")
        tid = combination_id(train)
        if tid not in models:
            models[tid] = Cell("interaction_model", cell_key("interaction_model", tid), f"interactions: train {tid}",
                               fingerprint({"victim": scenario.victim.to_dict(), "data": data[spec.private],
                                            "train": [m.to_dict() for m in train], "recipe": recipe,
                                            "seed": scenario.model.data_seed, "version": version}),
                               (victim.key,), defence=tid)
    attack = extraction_attack(scenario)
    settings = spec.model_dump(mode="json", exclude={"defences", "pairs", "tolerances", "accuracy_reference"})
    # the detectors and their calibration drive the reject / pow / misinformation members; the first attack seed
    # seeds the extraction attack
    common = {"output": [scenario.victim.output, scenario.victim.top_k], "thief": scenario.model.thief.model_dump(
        mode="json"), "attack": attack.to_dict(), "data": data, "settings": settings, "version": version,
        "detectors": [d.to_dict() for d in scenario.detectors],
        "detection": scenario.model.detection.model_dump(mode="json"), "attack_seed": scenario.model.seeds[0]}
    cells = list(models.values())
    for dep in deployments:
        model = models[combination_id(tuple(m for m in dep if m.role == "training"))]
        did = combination_id(dep)
        cells.append(Cell("interaction", cell_key("interaction", did), f"interactions: {did}", fingerprint(
            {**common, "model": model.key, "members": [m.to_dict() for m in dep]}), (victim.key, model.key),
            defence=did))
    measured = tuple(c.key for c in cells if c.kind == "interaction")
    cells.append(Cell("interaction_matrix", cell_key("interaction_matrix", ""), "interactions: conflict matrix",
                      fingerprint({"deployments": measured, "tolerances": spec.tolerances.model_dump(mode="json"),
                                   "accuracy_reference": spec.accuracy_reference,
                                   "version": version}), measured, cached=False))
    return cells


def ownership_embedding(scenario: Scenario) -> list[dict]:
    """The ownership schemes that leave a mark in the deployment (the victim's training or the API)."""
    out = []
    for ref in scenario.ownership:
        where = registry.ownership.get(ref.plugin).caps.embeds(ref.params)
        if where is not None:
            out.append({"where": where, **ref.to_dict()})
    return out


def _ownership_cells(scenario: Scenario, victim: Cell, extraction: list[Cell], data: dict,
                     version: str | None) -> list[Cell]:
    spec = scenario.model.ownership
    settings = spec.model_dump(mode="json", exclude={"schemes"})
    models = Cell("ownership_models", cell_key("ownership_models", ""), "ownership: independent models", fingerprint(
        {"victim": victim.key, "train": scenario.victim.to_dict(), "settings": settings, "data": data,
         "version": version}), (victim.key,))
    cells = [models]
    copies = tuple(c.key for c in extraction)
    for ref in scenario.ownership:
        key = fingerprint({"victim": victim.key, "models": models.key, "scheme": ref.to_dict(), "settings": settings,
                           "copies": copies, "version": version})
        cells.append(Cell("ownership", cell_key("ownership", ref.id), f"ownership: {ref.id}", key,
                          (victim.key, models.key, *copies), attack=ref.id, cached=scenario.model.output.cache_cells))
    return cells


def planned_cells(scenario: Scenario) -> list[str]:
    """The journal keys of the cells a run counts (progress output, summary.json's ``cells``), in order."""
    return [c.name for c in plan(scenario) if c.journalled]


def _victim_files(scenario: Scenario) -> dict[str, str]:
    """The digests of the victim's model files: a changed file is a different victim."""
    base = scenario.base_dir
    out = {}
    for field in ("weights", "path"):
        value = getattr(scenario.victim.params, field, None)
        if isinstance(value, str):
            path = Path(value) if Path(value).is_absolute() else base / value
            out[field] = file_digest(path) if path.is_file() else "missing"
    return out


def format_plan(cells: list[Cell], cache: Cache) -> str:
    """The plan as a table: each cell's kind, label, content address, cache status and dependencies."""
    labels = {c.key: c.label for c in cells}
    table = [("kind", "cell", "key", "status", "needs")]
    table += [(c.kind, c.label, c.key, c.status(cache), ", ".join(labels[k] for k in c.deps) or "-") for c in cells]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join(f"{v:<{w}}" for v, w in zip(row, widths)) + "  " + row[4] for row in table]
    counts = {s: sum(c.status(cache) == s for c in cells) for s in ("cached", "to run")}
    lines.append(f"{len(cells)} cells: {counts['cached']} cached, {counts['to run']} to run")
    return "\n".join(lines)
