"""Tramèr et al.'s attacks: equation solving, path finding, Lowd-Meek, retraining; the leaf output
mode; the rounding countermeasure; validation of incompatible choices. Small synthetic victims."""

from __future__ import annotations

import numpy as np
import pytest
from art.defences.postprocessor import Rounded
from sklearn.tree import DecisionTreeClassifier

from stealcheck.adapters.sklearn_victim import tree_node_ids
from stealcheck.attacks.tramer import EquationSolving, FeatureBox, LowdMeek, Retraining
from stealcheck.attacks.tramer_models import ModelFamily
from stealcheck.attacks.tramer_trees import PathFinding
from stealcheck.errors import ScenarioError
from stealcheck.metrics import agreement, total_variation
from stealcheck.oracle import Oracle
from stealcheck.scenario import build_scenario


class FamilyVictim:
    """A victim of one of the attack's model families with random float64 parameters."""

    def __init__(self, kind: str, d: int, c: int, hidden: int = 0, seed: int = 0, scale: float = 2.0):
        self.family = ModelFamily(kind, d, c, hidden, "tanh")
        self.theta = np.random.default_rng(seed).normal(0, scale, self.family.unknowns)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.family.proba(self.theta, np.asarray(x, dtype=np.float64).reshape(len(x), -1))

    def reference(self) -> dict:
        w, b = self.family.unpack(self.theta)
        return {"family": self.family.kind, "W": w, "b": b}


def oracle_for(victim, d: int, c: int, **kwargs) -> Oracle:
    return Oracle(victim, (d,), c, (0.0, 1.0), **kwargs)


def uniform(d: int, n: int = 2000, seed: int = 123) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, d))


# ---------------------------------------------------------------- equation solving


@pytest.mark.parametrize("design", ["basis", "uniform"])
def test_binary_lr_is_recovered_exactly_from_d_plus_1_queries(design, caplog):
    d = 12
    victim = FamilyVictim("binary_lr", d, 2, seed=3)
    oracle = oracle_for(victim, d, 2)
    attack = EquationSolving(oracle, family="binary_lr", query_design=design)
    with caplog.at_level("WARNING", logger="stealcheck"):
        ((queries, copy),) = list(attack.iter_checkpoints([d + 1]))
    assert queries == oracle.queries_used == d + 1
    w, b = victim.family.unpack(victim.theta)
    w_hat, b_hat = victim.family.unpack(_theta_of(copy, attack))
    assert np.max(np.abs(np.concatenate([w.ravel() - w_hat.ravel(), b - b_hat]))) < 1e-10
    assert copy.compare_with_victim(victim.reference())["param_max_abs_error"] < 1e-10
    metrics = copy.extra_metrics()
    assert metrics["unknowns"] == d + 1
    assert metrics["queries_per_unknown"] == 1.0
    # a sane box: nothing saturates, the system is well conditioned, and nobody is warned
    assert metrics["saturated_share"] == 0 and metrics["solve_residual"] < 1e-10
    assert 1 <= metrics["condition_number"] < 1e6
    assert not caplog.records
    x = uniform(d)
    assert total_variation(copy.predict_proba(x), victim(x)) < 1e-12


def test_binary_lr_from_a_scikit_learn_victim_to_float64_precision():
    """scikit-learn serves p0 = 1 - p1 in float64, as a JSON API would: the oracle passes the doubles on
    unrounded and the exact solve recovers the parameters to < 1e-10 (float32 answers gave 5.7e-7)."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    d = 20
    x, y = make_classification(n_samples=400, n_features=d, random_state=0)
    x = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
    model = LogisticRegression(C=10.0, max_iter=5000).fit(x, y)
    oracle = oracle_for(model.predict_proba, d, 2)
    assert oracle.predict(x[:3]).dtype == np.float64
    reference = {"family": "binary_lr", "W": model.coef_.T, "b": model.intercept_}
    attack = EquationSolving(oracle, family="binary_lr")
    for _, copy in attack.iter_checkpoints([d + 1, 2 * (d + 1)]):
        assert copy.compare_with_victim(reference)["param_max_abs_error"] < 1e-10


def _boundary_point(victim: FamilyVictim, d: int) -> np.ndarray:
    """The point of the victim's decision boundary nearest the centre of [0, 1]^d."""
    w, b = victim.family.unpack(victim.theta)
    centre = np.full(d, 0.5)
    return centre - (centre @ w[:, 0] + b[0]) * w[:, 0] / (w[:, 0] @ w[:, 0])


def test_binary_lr_warns_when_the_sigmoid_saturates_on_the_feature_box(caplog):
    """Steep weights: on the whole input range a third of the answers are 0 or 1 to float64 precision and
    the solve is off by tens. The copy reports it (saturated_share, a large solve_residual once the system
    is over-determined) and the stealcheck logger warns with a feature_box hint; a box narrowed around the
    decision boundary recovers the parameters and warns nobody."""
    d = 12
    victim = FamilyVictim("binary_lr", d, 2, seed=3, scale=20.0)
    x0 = _boundary_point(victim, d)
    narrow = [[float(a - 0.01), float(a + 0.01)] for a in x0]
    for box in (None, narrow):
        caplog.clear()
        attack = EquationSolving(oracle_for(victim, d, 2), family="binary_lr", feature_box=box)
        with caplog.at_level("WARNING", logger="stealcheck"):
            (_, square), (_, over) = list(attack.iter_checkpoints([d + 1, 2 * (d + 1)]))
        if box is None:
            warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert len(warnings) == 2  # one per checkpoint
            assert "saturate" in warnings[0] and "narrow feature_box toward the data" in warnings[0]
            assert "of 13 answers are within 1e-12 of 0 or 1" in warnings[0]
            assert "solve_residual" not in warnings[0]  # a square system's residual says nothing
            assert "solve_residual" in warnings[1]
            m = {**over.extra_metrics(), **over.compare_with_victim(victim.reference())}
            assert square.extra_metrics()["saturated_share"] > 0.1 and m["saturated_share"] > 0.1
            assert m["solve_residual"] > 1.0 and m["param_max_abs_error"] > 1.0
        else:
            assert not caplog.records
            m = {**over.extra_metrics(), **over.compare_with_victim(victim.reference())}
            assert m["saturated_share"] == 0 and m["solve_residual"] < 1e-10
            assert m["param_max_abs_error"] < 1e-9 and np.isfinite(m["condition_number"])


def test_binary_lr_warns_on_too_few_queries_and_inconsistent_answers(caplog):
    d = 6
    victim = FamilyVictim("binary_lr", d, 2, seed=4)
    with caplog.at_level("WARNING", logger="stealcheck"):
        attack = EquationSolving(oracle_for(victim, d, 2), family="binary_lr")
        ((_, copy),) = list(attack.iter_checkpoints([d]))
    assert copy.extra_metrics()["condition_number"] == np.inf
    assert "6 queries for 7 unknowns" in caplog.text
    caplog.clear()
    rounded = oracle_for(victim, d, 2, postprocessors=[Rounded(decimals=4)])
    with caplog.at_level("WARNING", logger="stealcheck"):
        attack = EquationSolving(rounded, family="binary_lr", feature_box=[[0.4, 0.6]])
        ((_, copy),) = list(attack.iter_checkpoints([4 * (d + 1)]))
    assert copy.extra_metrics()["saturated_share"] == 0
    assert copy.extra_metrics()["solve_residual"] > 1e-6
    assert "fit no single logistic regression" in caplog.text


def _theta_of(copy, attack) -> np.ndarray:
    """The extracted parameters, recovered by solving again from the copy's own answers (a check that
    the copy *is* that linear model)."""
    probe = np.vstack([attack.box_.basis()])
    return attack.fit_answers(probe, copy.predict_proba(probe))


def test_softmax_extraction_on_a_synthetic_problem():
    d, c = 8, 4
    victim = FamilyVictim("softmax", d, c, seed=1)
    oracle = oracle_for(victim, d, c)
    unknowns = (d + 1) * c
    attack = EquationSolving(oracle, family="softmax")
    results = list(attack.iter_checkpoints([unknowns // 2, unknowns]))
    assert [q for q, _ in results] == [unknowns // 2, unknowns] and oracle.queries_used == unknowns
    x = uniform(d)
    for _, copy in results:
        assert 1 - total_variation(copy.predict_proba(x), victim(x)) > 0.999
    assert results[-1][1].compare_with_victim(victim.reference())["param_max_abs_error"] < 1e-3  # identifiable up to a class shift


def test_ovr_and_mlp_fits_above_a_floor():
    d, c = 5, 3
    ovr = FamilyVictim("ovr", d, c, seed=2)
    copy = EquationSolving(oracle_for(ovr, d, c), family="ovr").extract(uniform(d, 36, 5))
    x = uniform(d)
    assert 1 - total_variation(copy.predict_proba(x), ovr(x)) > 0.999
    mlp = FamilyVictim("mlp", d, c, hidden=4, seed=4, scale=1.0)
    attack = EquationSolving(oracle_for(mlp, d, c), family="mlp", hidden=4, activation="tanh", restarts=3)
    (_, copy), = list(attack.iter_checkpoints([2 * mlp.family.unknowns]))
    assert 1 - total_variation(copy.predict_proba(x), mlp(x)) > 0.98


def test_rounding_degrades_equation_solving():
    d, c = 8, 4
    victim = FamilyVictim("softmax", d, c, seed=1)
    errors = {}
    for decimals in (None, 2):
        post = [] if decimals is None else [Rounded(decimals=decimals)]
        attack = EquationSolving(oracle_for(victim, d, c, postprocessors=post), family="softmax")
        (_, copy), = list(attack.iter_checkpoints([(d + 1) * c]))
        errors[decimals] = copy.compare_with_victim(victim.reference())["param_max_abs_error"]
    assert errors[None] < 1e-3 and errors[2] > 100 * errors[None]


def test_equation_solving_parameter_errors_are_readable():
    oracle = oracle_for(FamilyVictim("softmax", 4, 3), 4, 3)
    with pytest.raises(ValueError, match="'family' parameter of EquationSolving must be one of"):
        EquationSolving(oracle, family="svm")
    with pytest.raises(ValueError, match="needs a victim with 2 classes"):
        EquationSolving(oracle, family="binary_lr")
    with pytest.raises(ValueError, match="'l2' parameter .* non-negative"):
        EquationSolving(oracle, l2=-1.0)
    with pytest.raises(ValueError, match="3 \\[low, high\\] pairs; the victim's input has 4"):
        EquationSolving(oracle, feature_box=[[0, 1]] * 3)


def test_feature_box_bounds_the_queries():
    victim = FamilyVictim("softmax", 3, 2)
    oracle = oracle_for(victim, 3, 2)
    box = [[0.2, 0.3], [0.0, 1.0], [0.5, 0.6]]
    list(EquationSolving(oracle, family="softmax", feature_box=box).iter_checkpoints([50]))
    sent = oracle.clients["attacker"].inputs()
    lo, hi = np.array(box).T
    assert np.all(sent >= lo.astype(np.float32)) and np.all(sent <= hi.astype(np.float32))
    assert FeatureBox.resolve([[0, 2]], 3, None).high.tolist() == [2, 2, 2]


# ---------------------------------------------------------------- path finding


@pytest.fixture(scope="module")
def small_tree():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(300, 3))
    y = (x[:, 0] > 0.4).astype(int) + (x[:, 1] > 0.7) * (x[:, 2] < 0.5)
    return DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)


def tree_oracle(tree, **kwargs) -> Oracle:
    return Oracle(lambda x: tree.predict_proba(np.asarray(x, dtype=np.float64)), (tree.n_features_in_,),
                  tree.n_classes_, (0.0, 1.0), output_mode="leaf", leaf_predict=lambda x: tree_node_ids(tree, x),
                  **kwargs)


@pytest.mark.parametrize("variant", ["path", "top_down"])
def test_path_finding_reproduces_a_known_tree(small_tree, variant):
    eps = 1e-4
    oracle = tree_oracle(small_tree)
    attack = PathFinding(oracle, variant=variant, eps=eps)
    (_, copy), = list(attack.iter_checkpoints([100000]))
    t = small_tree.tree_
    leaves = {n for n in range(t.node_count) if t.children_left[n] == -1}
    assert {leaf.leaf_id for leaf in copy.tree.leaves()} == leaves  # every leaf, nothing else
    splits = copy.tree.splits()
    for n in range(t.node_count):
        if t.children_left[n] != -1:  # every threshold within eps, on the right feature
            assert min(abs(th - t.threshold[n]) for f, th in splits if f == t.feature[n]) <= eps
    x = uniform(3, 5000)
    assert agreement(copy.predict_proba(x), small_tree.predict_proba(x)) == 1.0
    assert total_variation(copy.predict_proba(x), small_tree.predict_proba(x)) == 0.0
    assert attack.queries == oracle.queries_used
    assert copy.extra_metrics()["leaves_found"] == len(leaves)


def test_a_small_budget_gives_a_partial_tree(small_tree):
    oracle = tree_oracle(small_tree, budget=40)
    results = list(PathFinding(oracle, variant="path").iter_checkpoints([20, 40]))
    assert oracle.queries_used == 40 and [b for b, _ in results] == [20, 40]
    assert results[0][1].extra_metrics()["leaves_found"] <= results[1][1].extra_metrics()["leaves_found"]


def test_leaf_mode_of_the_oracle(small_tree):
    oracle = tree_oracle(small_tree)
    x = np.array([[0.1, 0.9, 0.2], [np.nan, np.nan, np.nan]], dtype=np.float32)
    ids, probs = oracle.query_leaves(x)
    assert oracle.queries_used == 2 and ids[1] == 0  # the empty query stops at the root
    assert np.isnan(probs[1]).all() and probs[0].sum() == pytest.approx(1.0)
    assert ids[0] == small_tree.apply(x[:1].astype(np.float64))[0]
    with pytest.raises(ValueError, match="needs a decision-tree victim"):
        Oracle(lambda x: x, (3,), 2, (0.0, 1.0), output_mode="leaf")
    with pytest.raises(ValueError, match="output mode 'leaf'"):
        Oracle(lambda x: x, (3,), 2, (0.0, 1.0)).query_leaves(x)
    with pytest.raises(ValueError, match="serve a decision-tree victim with output: leaf"):
        PathFinding(Oracle(lambda x: x, (3,), 2, (0.0, 1.0)))


# ---------------------------------------------------------------- Lowd-Meek and retraining


def test_lowd_meek_recovers_the_direction_of_a_linear_boundary():
    d = 6
    victim = FamilyVictim("binary_lr", d, 2, seed=5)
    w, b = victim.family.unpack(victim.theta)
    victim.theta[-1] = -float(w.ravel() @ np.full(d, 0.5))  # the boundary crosses the box
    oracle = oracle_for(victim, d, 2, output_mode="label")
    attack = LowdMeek(oracle, eps=1e-7)
    (_, copy), = list(attack.iter_checkpoints([2000]))
    assert copy.compare_with_victim(victim.reference())["direction_cosine"] > 0.99999
    assert "direction_cosine" not in copy.extra_metrics()  # evaluation only: the attack never sees the victim's weights
    assert copy.extra_metrics()["boundary_points"] == d + 1
    x = uniform(d)
    assert agreement(copy.predict_proba(x), victim(x)) > 0.999
    assert oracle.queries_used <= 2000 and oracle.queries_used == round(copy.extra_metrics()["queries_per_unknown"] * (d + 1))


def test_retraining_strategies_count_queries_and_adaptive_learns_from_labels():
    d = 5
    victim = FamilyVictim("softmax", d, 3, seed=7)
    x = uniform(d)
    scores = {}
    for strategy in ("uniform", "line_search", "adaptive"):
        oracle = oracle_for(victim, d, 3, output_mode="label")
        attack = Retraining(oracle, strategy=strategy, family="softmax", use_probability=False, round_size=50)
        results = list(attack.iter_checkpoints([100, 300]))
        assert [b for b, _ in results] == [100, 300] and oracle.queries_used == 300
        scores[strategy] = agreement(results[-1][1].predict_proba(x), victim(x))
    assert scores["adaptive"] > 0.95 and scores["line_search"] > 0.9
    with pytest.raises(ValueError, match="'strategy' parameter of Retraining"):
        Retraining(oracle_for(victim, d, 3), strategy="smart")


# ---------------------------------------------------------------- scenarios: validation and a run


def tabular(attack, serve="probabilities", model="logistic_regression", name="breast_cancer", d=30, **extra):
    """A one-attack scenario on a scikit-learn victim (``extra``: more top-level sections)."""
    return {"name": "t", "victim": {"kind": "sklearn", "model": model, "input": {"shape": [d]}, "output": serve},
            "data": {"victim_train": {"source": "sklearn", "name": name, "split": "train"},
                     "test": {"source": "sklearn", "name": name, "split": "test"}},
            "attacks": [attack], "budgets": [d + 1], "evaluation": {"uniform_samples": 200}, **extra}


@pytest.mark.parametrize("scenario,message", [
    (tabular({"equation_solving": {"model": "binary_lr", "feature_box": [[0, 1]] * 29}}),
     "feature_box has 29 .* input has 30 features"),
    (tabular({"equation_solving": {"feature_box": [[-1, 1]]}}), "outside the victim's input range"),
    (tabular("path_finding"), "needs leaf ids .* serves 'probabilities'"),
    (tabular("path_finding", serve="leaf"), "output: leaf .* needs a decision-tree victim"),
    (tabular({"equation_solving": {"model": "binary_lr"}}, serve="label"), "needs probability outputs"),
    (tabular({"retraining": {"use_probability": True}}, serve="label"), "needs probability outputs"),
])
def test_validation_catches_incompatible_choices(scenario, message):
    with pytest.raises(ScenarioError, match=message):
        build_scenario(scenario)


def test_compatible_choices_validate():
    # The counterparts of the rejected choices above load, with the output mode they asked for.
    for item, serve, extra in (("path_finding", "leaf", {"model": "decision_tree"}),
                               ({"retraining": {"use_probability": False}}, "label", {}),
                               ("lowd_meek", "label", {})):
        scenario = build_scenario(tabular(item, serve=serve, **extra))
        assert scenario.victim.output == serve
        assert scenario.attacks[0].plugin == (item if isinstance(item, str) else next(iter(item)))


def test_a_scenario_runs_with_parameter_error_rows(tmp_path):
    from stealcheck.results import read_results
    from stealcheck.runner import run_scenario

    scenario = build_scenario(tabular({"equation_solving": {"model": "binary_lr", "query_design": "basis"}},
                                      defences=["none", {"rounded": {"decimals": 2}}],
                                      output={"dir": str(tmp_path)}))
    outcome = run_scenario(scenario, out_dir=tmp_path / "run", quiet=True)
    assert outcome.status == "complete"
    frame = read_results(outcome.run_dir)
    rows = frame[frame["kind"] == "extraction"]

    def value(defence, metric):
        return float(rows[(rows["defence"].str.startswith(defence)) & (rows["metric"] == metric)]["value"].iloc[0])

    # float64 end to end: scikit-learn victim -> oracle -> equation solving
    assert value("none", "param_max_abs_error") < 1e-10 and value("none", "r_test") < 1e-10
    assert value("none", "queries_used") == 31 and value("none", "queries_per_unknown") == 1.0
    assert value("none", "saturated_share") == 0 and value("none", "condition_number") < 1e6
    assert value("rounded", "param_max_abs_error") > 1e-3
    assert value("rounded", "saturated_share") > 0  # rounding to 2 decimals serves exact 0s and 1s ...
    log = (outcome.run_dir / "run.log").read_text()
    assert log.count("saturate on this feature box") == 1  # ... which run.log warns about, for that cell only


def test_an_attack_reaches_no_victim_parameters(tmp_path):
    """The victim's true parameters are evaluation-only: the runner compares the copy with them after
    the attack (``compare_with_victim``). Neither the oracle nor anything the attack context holds as
    data carries them. (The functions that answer queries hold the model itself, as any in-process
    black box does; an attack only calls them.)"""
    import dataclasses

    from stealcheck.attacks.base import AttackContext
    from stealcheck.cells import RunContext, World
    from stealcheck.victim import Victim

    scenario = build_scenario(tabular({"equation_solving": {"model": "binary_lr"}}, output={"dir": str(tmp_path)}))
    w = World(RunContext(scenario.as_written, scenario.source_path, str(tmp_path / "cache"), None), scenario)
    parameters = w.victim.parameters
    assert parameters is not None and parameters["family"] == "binary_lr"  # a linear victim has them
    oracle = w.oracle("none", 31)
    ctx = w.attack_context(oracle, [31], seed=0)
    assert not hasattr(oracle, "reference_parameters")
    assert {f.name for f in dataclasses.fields(AttackContext)} == {
        "oracle", "pool", "budgets", "make_thief", "thief_spec", "seed", "progress", "load_data", "detectors"}

    seen: set[int] = set()
    todo: list[tuple[str, object]] = [("ctx", ctx)]
    while todo:  # every object reachable as data: attributes, dataclass fields, containers
        path, obj = todo.pop()
        if id(obj) in seen or callable(obj) and not hasattr(obj, "__dict__") or isinstance(obj, type):
            continue
        seen.add(id(obj))
        assert not isinstance(obj, Victim), path
        assert obj is not parameters and obj is not parameters["W"] and obj is not parameters["b"], path
        if isinstance(obj, dict):
            assert "reference_parameters" not in obj, path
            todo += [(f"{path}[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo += [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
        elif hasattr(obj, "__dict__") and not isinstance(obj, np.ndarray):
            todo += [(f"{path}.{k}", v) for k, v in vars(obj).items()]
    assert len(seen) > 10

    # ... while the runner, after the attack, compares the copy with them
    (_, copy), = list(EquationSolving(ctx.oracle, family="binary_lr").iter_checkpoints([31]))
    assert "param_max_abs_error" not in copy.extra_metrics()
    assert copy.compare_with_victim(parameters)["param_max_abs_error"] < 1e-10
    assert copy.compare_with_victim(None) == {}


def test_model_inversion_on_the_extracted_copy_matches_the_victim():
    """Fredrikson et al.'s MIFace on the equation-solving copy vs on the victim (white-box). A softmax
    copy from 1x unknowns has parameter error ~1e-6, so both class representatives should be the same
    image; the 0.95 floor is far above what an unrelated model gives (a copy of another random victim
    correlates about 0 with it) and leaves room for ART's float32 steps."""
    from art.attacks.inference.model_inversion import MIFace

    from stealcheck.attacks.tramer_models import as_pytorch_classifier

    d, c = 16, 4
    victim = FamilyVictim("softmax", d, c, seed=5)
    attack = EquationSolving(oracle_for(victim, d, c), family="softmax")
    ((_, copy),) = list(attack.iter_checkpoints([attack.model_.unknowns]))
    copy_clf = as_pytorch_classifier(copy.model_family, copy.theta, (d,), (0.0, 1.0))
    x = uniform(d, 50)
    assert np.max(np.abs(copy_clf.predict(x) - copy.predict_proba(x))) < 1e-6
    victim_clf = as_pytorch_classifier(victim.family, victim.theta, (d,), (0.0, 1.0))
    other = as_pytorch_classifier(victim.family, FamilyVictim("softmax", d, c, seed=6).theta, (d,), (0.0, 1.0))
    y = np.arange(c)
    reps = [MIFace(clf, max_iter=100, threshold=1.0, learning_rate=0.1, batch_size=c, verbose=False)
            .infer(np.full((c, d), 0.5), y) for clf in (copy_clf, victim_clf, other)]
    corr = [np.corrcoef(reps[0][k], reps[1][k])[0, 1] for k in y]
    assert min(corr) > 0.95, corr
    assert np.mean(np.abs(reps[0] - reps[1])) < 0.02
    assert np.mean([np.corrcoef(reps[2][k], reps[1][k])[0, 1] for k in y]) < 0.8
