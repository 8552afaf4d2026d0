"""The model families of Tramèr et al.'s attacks, in numpy: what the attacker fits and returns.

Each :class:`ModelFamily` maps a flat parameter vector theta to class probabilities and gives the
cross-entropy between target probabilities (the victim's answers) and its own, with its gradient,
so that :func:`fit_cross_entropy` can minimise it with scipy's L-BFGS-B. The families:

* ``binary_lr``: p(1|x) = sigmoid(w.x + b) (d + 1 unknowns); also solvable exactly, see
  :func:`solve_binary_logit`;
* ``softmax``: multinomial logistic regression, softmax(W x + b) (c (d + 1) unknowns);
* ``ovr``: one-vs-rest logistic regression as scikit-learn serves it,
  sigmoid(z_i) / sum_j sigmoid(z_j), z = W x + b (c (d + 1) unknowns);
* ``mlp``: one hidden layer (relu, tanh or logistic) and a softmax output (one sigmoid unit for
  two classes, as scikit-learn's MLPClassifier).

:class:`ExtractedClassifier` wraps a fitted model as an ART classifier (a ``BlackBoxClassifier``
whose predict function is the extracted model) with ``predict_proba`` and ``extra_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from art.estimators.classification import BlackBoxClassifier
from scipy.optimize import minimize
from scipy.special import expit, log_expit, logsumexp

FAMILIES = ("binary_lr", "softmax", "ovr", "mlp")
ACTIVATIONS = ("relu", "tanh", "logistic")
_TINY = 1e-12


def normalise_targets(p: np.ndarray) -> np.ndarray:
    """Rows that sum to one (top-k and rounded answers need not); all-zero rows become uniform."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    sums = p.sum(axis=1, keepdims=True)
    return np.where(sums > 0, p / np.where(sums > 0, sums, 1.0), 1.0 / p.shape[1])


@dataclass(frozen=True)
class ModelFamily:
    """A parametric classifier on flat inputs of dimension ``d`` with ``c`` classes."""

    kind: str
    d: int
    c: int
    hidden: int = 0
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.kind not in FAMILIES:
            raise ValueError(f"unknown model family {self.kind!r}; expected one of {', '.join(FAMILIES)}")
        if self.kind == "binary_lr" and self.c != 2:
            raise ValueError(f"binary_lr needs a victim with 2 classes, this one has {self.c}")
        if self.kind == "mlp" and self.hidden <= 0:
            raise ValueError("an mlp needs hidden > 0 units")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}")

    @property
    def outputs(self) -> int:
        """Output units: one sigmoid unit for binary models, else one per class."""
        return 1 if self.kind == "binary_lr" or (self.kind == "mlp" and self.c == 2) else self.c

    @property
    def unknowns(self) -> int:
        """Number of parameters (Tramèr's 'unknowns')."""
        if self.kind == "mlp":
            return self.d * self.hidden + self.hidden + self.hidden * self.outputs + self.outputs
        return (self.d + 1) * self.outputs

    # ---------------------------------------------------------------- parameters

    def unpack(self, theta: np.ndarray) -> list[np.ndarray]:
        """theta -> [W (d x k), b (k)] or [W1, b1, W2, b2] for the mlp."""
        if self.kind == "mlp":
            shapes = [(self.d, self.hidden), (self.hidden,), (self.hidden, self.outputs), (self.outputs,)]
        else:
            shapes = [(self.d, self.outputs), (self.outputs,)]
        out, i = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            out.append(theta[i:i + n].reshape(shape))
            i += n
        return out

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """A starting point: zeros for the (convex) linear models, Glorot-scaled weights for the mlp."""
        if self.kind != "mlp":
            return np.zeros(self.unknowns)
        parts = [rng.normal(0, np.sqrt(2.0 / (self.d + self.hidden)), (self.d, self.hidden)), np.zeros(self.hidden),
                 rng.normal(0, np.sqrt(2.0 / (self.hidden + self.outputs)), (self.hidden, self.outputs)),
                 np.zeros(self.outputs)]
        return np.concatenate([p.ravel() for p in parts])

    def weight_mask(self) -> np.ndarray:
        """1 for weights (L2-penalised), 0 for biases."""
        return np.concatenate([np.full(p.size, 0.0 if p.ndim == 1 else 1.0) for p in self.unpack(np.zeros(self.unknowns))])

    # ---------------------------------------------------------------- forward / backward

    def _hidden(self, x: np.ndarray, w1: np.ndarray, b1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = x @ w1 + b1
        if self.activation == "relu":
            return a, np.maximum(a, 0.0)
        if self.activation == "tanh":
            return a, np.tanh(a)
        return a, expit(a)

    def _act_grad(self, a: np.ndarray, h: np.ndarray) -> np.ndarray:
        if self.activation == "relu":
            return (a > 0).astype(a.dtype)
        if self.activation == "tanh":
            return 1.0 - h ** 2
        return h * (1.0 - h)

    def _logits(self, theta: np.ndarray, x: np.ndarray):
        parts = self.unpack(theta)
        if self.kind == "mlp":
            w1, b1, w2, b2 = parts
            a, h = self._hidden(x, w1, b1)
            return h @ w2 + b2, (a, h, w1, w2)
        w, b = parts
        return x @ w + b, None

    def _log_proba(self, z: np.ndarray) -> np.ndarray:
        """Log class probabilities from the output units (n x c)."""
        if z.shape[1] == 1:  # one sigmoid unit: [1 - p, p]
            return np.concatenate([log_expit(-z), log_expit(z)], axis=1)
        if self.kind == "ovr":
            ls = log_expit(z)
            return ls - logsumexp(ls, axis=1, keepdims=True)
        return z - logsumexp(z, axis=1, keepdims=True)

    def proba(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Class probabilities of flat inputs ``x`` (n x d)."""
        z, _ = self._logits(theta, np.asarray(x, dtype=np.float64))
        return np.exp(self._log_proba(z))

    def loss_and_grad(self, theta: np.ndarray, x: np.ndarray, p: np.ndarray, l2: float,
                      mask: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean cross-entropy -sum_i p_i log f_i(x) plus l2/2 ||weights||^2, and its gradient."""
        n = len(x)
        z, cache = self._logits(theta, x)
        logq = self._log_proba(z)
        loss = -float(np.sum(p * logq)) / n + 0.5 * l2 * float(np.sum(mask * theta ** 2))
        q = np.exp(logq)
        if z.shape[1] == 1:
            dz = (q[:, 1:] - p[:, 1:]) / n
        elif self.kind == "ovr":
            s = expit(z)
            dz = (1.0 - s) * (q * p.sum(axis=1, keepdims=True) - p) / n
        else:
            dz = (q - p) / n
        if self.kind == "mlp":
            a, h, w1, w2 = cache
            dh = (dz @ w2.T) * self._act_grad(a, h)
            grads = [x.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)]
        else:
            grads = [x.T @ dz, dz.sum(axis=0)]
        grad = np.concatenate([g.ravel() for g in grads]) + l2 * mask * theta
        return loss, grad


def _standardiser(family: ModelFamily, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) of the queries per feature for the mlp, whose fit is then run on standardised inputs."""
    if family.kind != "mlp":
        return None
    mu, sd = x.mean(axis=0), x.std(axis=0)
    return mu, np.where(sd > 0, sd, 1.0)


def _to_standard(family: ModelFamily, theta: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """mlp parameters on x -> the same function on z = (x - mu) / sd."""
    w1, b1, w2, b2 = family.unpack(theta)
    return np.concatenate([(w1 * sd[:, None]).ravel(), b1 + mu @ w1, w2.ravel(), b2])


def _from_standard(family: ModelFamily, theta: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """mlp parameters on z = (x - mu) / sd -> the same function on x."""
    w1, b1, w2, b2 = family.unpack(theta)
    w1 = w1 / sd[:, None]
    return np.concatenate([w1.ravel(), b1 - mu @ w1, w2.ravel(), b2])


def fit_cross_entropy(family: ModelFamily, x: np.ndarray, p: np.ndarray, *, l2: float = 1e-8,
                      theta0: np.ndarray | None = None, max_iter: int = 5000, restarts: int = 1,
                      seed: int = 0) -> tuple[np.ndarray, float]:
    """Minimise the regularised cross-entropy with L-BFGS-B; returns (theta, final loss).

    With ``restarts`` > 1 (non-convex mlp), further random starts are tried and the lowest loss kept.
    The mlp is fitted on standardised inputs (each feature centred and scaled by the queries' own
    mean and standard deviation, then mapped back): with inputs in [0, 1] every hidden unit's
    pre-activation carries a large common offset, and L-BFGS-B on the raw inputs is badly
    conditioned (on the 20-unit digits victim it stops at a 20x higher cross-entropy after the same
    iterations). The L2 penalty applies to the standardised weights.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    p = normalise_targets(p)
    mask = family.weight_mask()
    rng = np.random.default_rng(seed)
    std = _standardiser(family, x)
    if std is not None:
        x = (x - std[0]) / std[1]
        if theta0 is not None:
            theta0 = _to_standard(family, theta0, *std)
    best: tuple[np.ndarray, float] | None = None
    for r in range(max(1, restarts)):
        start = theta0 if (r == 0 and theta0 is not None) else family.init(rng)
        res = minimize(family.loss_and_grad, start, args=(x, p, l2, mask), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxfun": 2 * max_iter, "gtol": 1e-12, "ftol": 1e-15,
                                "maxcor": 30})
        if best is None or res.fun < best[1]:
            best = (res.x, float(res.fun))
    if std is not None:
        best = (_from_standard(family, best[0], *std), best[1])
    return best


@dataclass(frozen=True)
class LogitSolution:
    """The solution of the binary logit system, with what tells whether it can be trusted.

    ``residual`` is the root mean square of [x, 1] theta - log(p1 / p0), in logit units: about 1e-14
    for exact float64 answers, large when the answers fit no single logistic regression (rounded or
    saturated answers, another model family). A square system (n = d + 1) is solved exactly whatever
    the answers, so its residual is ~0 and says nothing: ``saturated`` does. ``condition`` is the
    2-norm condition number of [x, 1] (inf with fewer queries than unknowns: the parameters are not
    determined); the solution's error grows with it. ``saturated`` counts answers within
    ``SATURATION`` of 0 or 1: their logit is lost to clipping and rounding.
    """

    theta: np.ndarray  # (w, b) concatenated, as ModelFamily("binary_lr").unpack reads it
    residual: float
    condition: float
    saturated: int
    n: int

    @property
    def w(self) -> np.ndarray:
        return self.theta[:-1]

    @property
    def b(self) -> float:
        return float(self.theta[-1])


#: answers this close to 0 or 1 carry no usable logit (the clip at _TINY replaces it)
SATURATION = _TINY


def solve_binary_logit(x: np.ndarray, p: np.ndarray) -> LogitSolution:
    """Tramèr's exact attack on binary logistic regression: log(p1 / p0) = w.x + b is linear in (w, b).

    ``x`` (n x d, n >= d + 1 linearly independent rows) and the returned probabilities ``p`` (n x 2);
    least squares when n > d + 1. Probabilities are clipped away from 0 so rounded or label-only
    answers give a (wrong) finite solution rather than infinities; the returned diagnostics say when
    that happened (see :class:`LogitSolution`).
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    p = np.asarray(p, dtype=np.float64)
    saturated = int(np.sum(np.min(p, axis=1) <= SATURATION))
    p = np.clip(p, _TINY, None)
    logit = np.log(p[:, 1]) - np.log(p[:, 0])
    a = np.hstack([x, np.ones((len(x), 1))])
    theta, _, rank, sv = np.linalg.lstsq(a, logit, rcond=None)
    residual = float(np.sqrt(np.mean((a @ theta - logit) ** 2))) if len(x) else float("nan")
    determined = rank == a.shape[1] and sv[-1] > 0
    condition = float(sv[0] / sv[-1]) if determined else float("inf")
    return LogitSolution(theta, residual, condition, saturated, len(x))


class ExtractedClassifier(BlackBoxClassifier):
    """An extracted copy as an ART classifier: ``predict`` returns its class probabilities.

    ``extra_metrics()`` gives attack-specific figures (unknowns, solve diagnostics, ...) that the
    runner writes next to the standard metrics. ``compare_with_victim(parameters)`` gives the
    evaluation-only ones (parameter error, direction cosine): the runner calls it after the attack
    with the victim's true parameters, which the attack itself never sees (``compare``: the copy's
    own comparison, a function of those parameters).
    """

    def __init__(self, proba_fn: Callable[[np.ndarray], np.ndarray], input_shape: tuple[int, ...], nb_classes: int,
                 clip_values: tuple[float, float] | None, metrics: dict[str, float] | None = None,
                 description: str = "", compare: Callable[[dict], dict[str, float]] | None = None):
        self._proba_fn = proba_fn
        super().__init__(predict_fn=self._flat_proba, input_shape=tuple(input_shape), nb_classes=nb_classes,
                         clip_values=clip_values)
        self.metrics = dict(metrics or {})
        self.description = description
        self._compare = compare

    def _flat_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.asarray(self._proba_fn(x.reshape(len(x), -1)), dtype=np.float64)

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (float64)."""
        return self._flat_proba(x)

    def extra_metrics(self) -> dict[str, float]:
        """Attack-specific figures, written by the runner as result rows."""
        return dict(self.metrics)

    def compare_with_victim(self, parameters: dict | None) -> dict[str, float]:
        """Evaluation only: figures of this copy against the victim's true parameters
        ({family, W, b}, see ``Victim.parameters``); empty when either side has nothing to compare."""
        if self._compare is None or not parameters:
            return {}
        return self._compare(parameters)


def as_pytorch_classifier(family: ModelFamily, theta: np.ndarray, input_shape: tuple[int, ...],
                          clip_values: tuple[float, float] | None):
    """An extracted copy as a differentiable ART ``PyTorchClassifier`` (for white-box attacks on the copy,
    e.g. ART's ``MIFace`` model inversion): a float64 torch module computing ``family.proba(theta, x)``.

    The module outputs class *probabilities*, so ``class_gradient`` is the gradient of f_k(x). (ART's
    ``ScikitlearnLogisticRegression`` gives the gradient of log f_k instead: same direction, scaled by 1/f_k.)
    """
    import torch
    from art.estimators.classification import PyTorchClassifier

    parts = [torch.tensor(np.asarray(t, dtype=np.float64)) for t in family.unpack(np.asarray(theta, dtype=np.float64))]

    class _Copy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.params = torch.nn.ParameterList([torch.nn.Parameter(t, requires_grad=False) for t in parts])

        def forward(self, x):
            x = x.reshape(len(x), -1).to(torch.float64)
            if family.kind == "mlp":
                w1, b1, w2, b2 = self.params
                a = x @ w1 + b1
                h = torch.relu(a) if family.activation == "relu" else (
                    torch.tanh(a) if family.activation == "tanh" else torch.sigmoid(a))
                z = h @ w2 + b2
            else:
                w, b = self.params
                z = x @ w + b
            if z.shape[1] == 1:
                p1 = torch.sigmoid(z)
                return torch.cat([1 - p1, p1], dim=1)
            if family.kind == "ovr":
                s = torch.sigmoid(z)
                return s / s.sum(dim=1, keepdim=True)
            return torch.softmax(z, dim=1)

    module = _Copy()
    return PyTorchClassifier(module, loss=torch.nn.NLLLoss(), input_shape=tuple(input_shape),
                             nb_classes=family.c, clip_values=clip_values, device_type="cpu")
