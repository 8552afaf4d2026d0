"""Data-free model extraction: DFME (Truong et al. 2021) and MAZE (Kariyappa et al. 2021).

Neither attack needs any data. A generator G(z) makes the queries; the student (the thief) learns
to match the victim's answers on them, and the generator learns to make queries on which the
student and the victim disagree. The victim is a black box: only ``estimator.predict`` is called
(probabilities), never its gradients or weights. The generator's gradient through the victim is
estimated from extra queries by forward differences along random directions
(:func:`zeroth_order_gradient`), and every one of those queries is counted.

:class:`DataFreeModelExtraction` and :class:`MAZE` are ART extraction attacks (they subclass
``art.attacks.ExtractionAttack`` and work with any ART classifier that returns probabilities,
``BlackBoxClassifier`` included); the ``dfme`` and ``maze`` plugins run them against stealcheck's
oracle and yield the student at every budget checkpoint.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from art.attacks.attack import ExtractionAttack
from art.estimators.classification import PyTorchClassifier
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator
from pydantic import BaseModel

from stealcheck.thief import ThiefClassifier

from .base import AttackContext, CheckpointedExtraction
from .specs import DFMEParams, MAZEParams

__all__ = ["zeroth_order_gradient", "DataFreeGenerator", "DataFreeModelExtraction", "MAZE",
           "DFMEParams", "MAZEParams", "DFMEAttack", "MAZEAttack"]


# ---------------------------------------------------------------- the gradient estimator


def zeroth_order_gradient(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          nb_directions: int = 1, epsilon: float = 1e-3,
                          rng: torch.Generator | None = None) -> torch.Tensor:
    """Forward-difference estimate of the gradient of a per-sample loss, from function values only.

    For each sample x (flattened dimension d) draw ``nb_directions`` (m) directions u uniformly on
    the unit sphere and return

        g(x) = d * mean_j [(L(x + eps u_j) - L(x)) / eps] * u_j,

    an estimate of dL/dx whose expectation is the gradient (up to O(eps) bias): E[u u^T] = I / d
    on the unit sphere. Its squared error is about (d - 1) / m times the gradient's squared norm,
    so more directions give a better direction estimate.

    ``loss_fn`` maps a batch of points of ``x``'s shape to one loss per point; it is called once,
    on the n * (m + 1) points ``[x_1..x_n, x_1 + eps u_11, .., x_1 + eps u_1m, x_2 + eps u_21, ..]``
    (the n unperturbed points first), so a black-box ``loss_fn`` makes one query batch.
    ``rng`` (a CPU ``torch.Generator``) makes the directions reproducible. Returns a tensor shaped
    like ``x``; nothing is differentiated.
    """
    if nb_directions < 1:
        raise ValueError(f"nb_directions must be a positive integer. Got {nb_directions} instead.")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive. Got {epsilon} instead.")
    x = x.detach()
    n = x.shape[0]
    d = x[0].numel()
    flat = x.reshape(n, d)
    u = torch.randn(n, nb_directions, d, generator=rng, dtype=x.dtype, device="cpu").to(x.device)
    u = u / u.norm(dim=2, keepdim=True)
    perturbed = (flat[:, None, :] + epsilon * u).reshape(n * nb_directions, d)
    points = torch.cat([flat, perturbed]).reshape(n * (nb_directions + 1), *x.shape[1:])
    with torch.no_grad():
        losses = loss_fn(points).reshape(-1).to(x.dtype)
    if losses.shape[0] != n * (nb_directions + 1):
        raise ValueError(f"loss_fn must return one loss per point: expected {n * (nb_directions + 1)}, "
                         f"got {losses.shape[0]}")
    base, moved = losses[:n], losses[n:].reshape(n, nb_directions)
    slopes = (moved - base[:, None]) / epsilon  # directional derivatives along each u
    grad = d * (slopes[:, :, None] * u).mean(dim=1)
    return grad.reshape(x.shape)


# ---------------------------------------------------------------- the generator


class DataFreeGenerator(nn.Module):
    """DFME's generator, for image inputs (C, H, W) and, as our extension, flat inputs (d,).

    Images: Linear(nz -> 2w x h0 x w0) -> BN -> upsample x2 -> conv3x3(2w) BN LeakyReLU(0.2) ->
    upsample x2 -> conv3x3(w) BN LeakyReLU(0.2) -> conv3x3(C) -> [bilinear resize to H x W] ->
    BN(affine=False) -> tanh, with w = ``width`` (64 in the reference: 128 then 64 channels). The
    network is built at (4 h0, 4 w0) with h0 = max(2, ceil(H / 4)), so 28x28 and 32x32 need no
    resize and other sizes are resized before the last BN.

    Flat inputs: Linear(nz, 4w) BN LeakyReLU -> Linear(4w, 4w) BN LeakyReLU -> Linear(d) ->
    BN(affine=False) -> tanh.

    ``forward(z, pre_tanh=False)`` returns tanh's output in [-1, 1], or its input when
    ``pre_tanh`` is true (the space in which DFME perturbs queries).
    """

    def __init__(self, input_shape: Sequence[int], nz: int = 256, width: int = 64):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.nz = nz
        if len(self.input_shape) == 3:
            c, h, w = self.input_shape
            self.init_size = (max(2, math.ceil(h / 4)), max(2, math.ceil(w / 4)))
            self.project = nn.Linear(nz, 2 * width * self.init_size[0] * self.init_size[1])
            self.body = nn.Sequential(
                nn.BatchNorm2d(2 * width),
                nn.Upsample(scale_factor=2),
                nn.Conv2d(2 * width, 2 * width, 3, stride=1, padding=1),
                nn.BatchNorm2d(2 * width),
                nn.LeakyReLU(0.2),
                nn.Upsample(scale_factor=2),
                nn.Conv2d(2 * width, width, 3, stride=1, padding=1),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2),
                nn.Conv2d(width, c, 3, stride=1, padding=1),
            )
            self.width = width
            self.out_norm = nn.BatchNorm2d(c, affine=False)
        elif len(self.input_shape) == 1:
            (d,) = self.input_shape
            self.project = nn.Identity()
            self.body = nn.Sequential(
                nn.Linear(nz, 4 * width), nn.BatchNorm1d(4 * width), nn.LeakyReLU(0.2),
                nn.Linear(4 * width, 4 * width), nn.BatchNorm1d(4 * width), nn.LeakyReLU(0.2),
                nn.Linear(4 * width, d),
            )
            self.width = width
            self.out_norm = nn.BatchNorm1d(d, affine=False)
        else:
            raise ValueError(f"DataFreeGenerator supports inputs shaped (C, H, W) or (d,). Got {self.input_shape}.")

    def forward(self, z: torch.Tensor, pre_tanh: bool = False) -> torch.Tensor:
        if len(self.input_shape) == 3:
            h = self.project(z).view(z.shape[0], 2 * self.width, *self.init_size)
            out = self.body(h)
            if tuple(out.shape[2:]) != self.input_shape[1:]:
                out = F.interpolate(out, size=self.input_shape[1:], mode="bilinear", align_corners=False)
        else:
            out = self.body(z)
        out = self.out_norm(out)
        return out if pre_tanh else torch.tanh(out)


def to_input_range(t: torch.Tensor, clip_values: tuple[float, float]) -> torch.Tensor:
    """Map tanh's [-1, 1] affinely onto the victim's input range [lo, hi]."""
    lo, hi = float(clip_values[0]), float(clip_values[1])
    return (lo + (t + 1.0) * (0.5 * (hi - lo))).clamp(lo, hi)


# ---------------------------------------------------------------- DFME


class DataFreeModelExtraction(ExtractionAttack, CheckpointedExtraction):
    """Data-Free Model Extraction (DFME, Truong et al., CVPR 2021).

    The attacker has no data. A generator G(z), z ~ N(0, I), synthesises queries; the student
    (``thieved_classifier``) is trained to match the victim on them, and G is trained to
    maximise the student-victim disagreement, so that queries go where the student is wrong.

    * The victim returns probabilities p. Logits are recovered as log(max(p, prob_floor)) minus
      their per-sample mean (the victim's logits up to a per-sample constant).
    * Loss: the L1 distance between the student's logits and the recovered logits (mean over
      classes and samples). The student minimises it, the generator maximises it.
    * The victim is a black box, so the generator's gradient dL/dx is estimated by forward
      differences (:func:`zeroth_order_gradient`) with ``nb_directions`` random unit directions
      and step ``epsilon`` in the generator's pre-tanh output space, and backpropagated through G.
      The student is in eval mode while the disagreement is measured, so each sample's loss
      depends on that sample only (batch-norm batch statistics would couple the perturbed
      points); the loss is differentiable wherever the victim is.
    * One iteration: ``n_generator_steps`` generator steps on ``batch_size`` samples (each costs
      ``batch_size * (nb_directions + 1)`` queries), then ``n_student_steps`` student steps, each
      on a fresh generator batch of ``batch_size`` samples (``batch_size`` queries).
    * Optimisers as in the reference: student SGD (``lr_student`` 0.1, ``momentum`` 0.9,
      ``weight_decay`` 5e-4), generator Adam (``lr_generator`` 1e-4). Both learning rates are
      multiplied by ``lr_gamma`` (0.3) when the queries spent pass each fraction of ``nb_stolen`` in
      ``lr_milestones`` (0.1, 0.3, 0.5), which is the reference's schedule expressed in queries.
    * Generator outputs (tanh, in [-1, 1]) are mapped affinely onto the victim's ``clip_values``.

    Query accounting: every victim call counts, those of the gradient estimate included. Near a
    checkpoint the last batches shrink so that the count lands on it exactly and never passes it:
    a generator step with r queries left before the checkpoint uses r // (nb_directions + 1)
    samples (none: skipped), a student step min(batch_size, r). G still generates a full batch
    (batch-norm statistics stay those of ``batch_size`` samples) of which only the first ones are
    sent. ``iter_checkpoints`` yields the student at each checkpoint; ``extract`` runs to ``nb_stolen``.

    The student is an ART ``PyTorchClassifier`` whose module outputs logits; its module is trained
    directly with the student optimiser (after the classifier's torch preprocessing), not with
    ``fit``. z and the directions come from ``torch.Generator``s seeded with ``seed``, and G is
    initialised under that seed without touching the global RNG, so a run is reproducible.

    Budgets: the reference runs 2M (SVHN) and 20M (CIFAR-10) queries. Measured against a conv3
    MNIST victim (``benchmarks/attacks_mnist.py``, generator width 16, 10k MNIST test images, 2 CPU
    cores), one run with ``nb_stolen`` 2M: fidelity 0.564 at 100k queries (105 s), 0.968 at 500k
    (592 s), 0.977 at 2M (2,433 s). The learning-rate milestones are fractions of ``nb_stolen``, so
    a small budget decays the rates early: a run whose budget is 100k itself (rates cut by 0.3^3 at
    50k) stays at chance (fidelity 0.104), as did a standalone run with a 200k budget (0.095, with
    student rates 0.1 and 0.01 alike); an earlier 100k run with a constant rate stayed there too,
    so the schedule is not the whole story. The student gets 5 SGD steps per 1,792 queries, a few
    hundred by 100k, and may not leave the constant-output plateau a fresh network starts on;
    :class:`MAZE`'s experience replay adds steps that cost no queries.
    """

    attack_params = ExtractionAttack.attack_params + [
        "nb_stolen", "batch_size", "nz", "generator_width", "n_generator_steps", "n_student_steps",
        "lr_student", "lr_generator", "momentum", "weight_decay", "nb_directions", "epsilon",
        "lr_milestones", "lr_gamma", "prob_floor", "seed", "verbose", "stealth_weight", "stealth_reference",
        "stealth_pretrain_steps",
    ]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)

    def __init__(self, classifier, nb_stolen: int = 2_000_000, batch_size: int = 256, nz: int = 256,
                 generator_width: int = 64, n_generator_steps: int = 1, n_student_steps: int = 5,
                 lr_student: float = 0.1, lr_generator: float = 1e-4, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nb_directions: int = 1, epsilon: float = 1e-3,
                 lr_milestones: Sequence[float] = (0.1, 0.3, 0.5), lr_gamma: float = 0.3,
                 prob_floor: float = 1e-8, seed: int | None = None, verbose: bool = False,
                 stealth_weight: float = 0.0, stealth_reference: np.ndarray | None = None,
                 stealth_pretrain_steps: int = 0) -> None:
        """
        :param classifier: the victim: an ART classifier whose ``predict`` returns probabilities.
        :param nb_stolen: the query budget (the number of inputs sent to the victim).
        :param batch_size: generator batch size (reference: 256).
        :param nz: dimension of the generator's latent vector z (reference: 256).
        :param generator_width: channels of the generator's last hidden conv (reference: 64; the first has twice that).
        :param n_generator_steps: generator steps per iteration (reference: 1).
        :param n_student_steps: student steps per iteration, each on a fresh batch (reference: 5).
        :param lr_student: SGD learning rate of the student (reference: 0.1).
        :param lr_generator: Adam learning rate of the generator (reference: 1e-4).
        :param momentum: SGD momentum of the student (reference: 0.9).
        :param weight_decay: SGD weight decay of the student (reference: 5e-4).
        :param nb_directions: random directions m per sample of the gradient estimate (reference: 1).
        :param epsilon: forward-difference step in pre-tanh space (reference: 1e-3).
        :param lr_milestones: fractions of ``nb_stolen`` after which both learning rates are multiplied by
               ``lr_gamma`` (reference: 0.1, 0.3, 0.5); empty for a constant rate.
        :param lr_gamma: the factor applied at each milestone (reference: 0.3).
        :param prob_floor: probabilities are clamped to at least this before taking the log.
        :param seed: seed of the generator's initialisation, latent vectors and directions.
        :param verbose: show a progress bar over the queries.
        :param stealth_weight: adaptive attacker: weight of a penalty on the generator for queries that a
               detector would find atypical, as the attacker can estimate it from its own data (0: off).
               The estimate is a per-pixel Gaussian fitted on ``stealth_reference``: the penalty is the
               mean squared z-score of the generated pixels (std floored at 0.05). It is differentiable
               and costs no queries.
        :param stealth_reference: the attacker's own images (N, *input_shape) for that estimate.
        :param stealth_pretrain_steps: generator steps on the penalty alone before the first query (Adam,
               lr 1e-3, batches of ``batch_size``; no queries): without them the few generator steps of a
               small budget cannot move the queries (at 4,000 queries DFME takes about two).
        """
        super().__init__(estimator=classifier)
        self.stealth_weight = stealth_weight
        self.stealth_reference = stealth_reference
        self.stealth_pretrain_steps = stealth_pretrain_steps
        self.nb_stolen = nb_stolen
        self.batch_size = batch_size
        self.nz = nz
        self.generator_width = generator_width
        self.n_generator_steps = n_generator_steps
        self.n_student_steps = n_student_steps
        self.lr_student = lr_student
        self.lr_generator = lr_generator
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nb_directions = nb_directions
        self.epsilon = epsilon
        self.lr_milestones = tuple(lr_milestones) if isinstance(lr_milestones, (list, tuple)) else lr_milestones
        self.lr_gamma = lr_gamma
        self.prob_floor = prob_floor
        self.seed = seed
        self.verbose = verbose
        self._check_params()

    # -------------------------------------------------------------- checks

    def _fail(self, name: str, requirement: str, value) -> None:
        raise ValueError(f"The '{name}' parameter of {type(self).__name__} must be {requirement}. "
                         f"Got {value!r} instead.")

    def _check_int(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
        if not ok:
            requirement = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum,
                                                                                 f"an integer >= {minimum}")
            self._fail(name, requirement, value)

    def _check_real(self, name: str, low: float, high: float, low_open: bool, high_open: bool,
                    requirement: str) -> None:
        value = getattr(self, name)
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if ok:
            v = float(value)
            ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            self._fail(name, requirement, value)

    def _check_params(self) -> None:
        super()._check_params()
        self._check_int("nb_stolen", 1)
        # The generator's batch norm needs batch statistics of more than one sample.
        self._check_int("batch_size", 2)
        self._check_int("nz", 1)
        self._check_int("generator_width", 1)
        self._check_int("n_generator_steps", 0)
        self._check_int("n_student_steps", 1)
        self._check_int("nb_directions", 1)
        self._check_real("lr_student", 0, math.inf, True, True, "a positive number")
        self._check_real("lr_generator", 0, math.inf, True, True, "a positive number")
        self._check_real("momentum", 0, 1, False, True, "a number in [0, 1)")
        self._check_real("weight_decay", 0, math.inf, False, True, "a non-negative number")
        self._check_real("epsilon", 0, math.inf, True, True, "a positive number")
        self._check_real("lr_gamma", 0, 1, True, False, "a number in (0, 1]")
        self._check_real("prob_floor", 0, 1, True, True, "a number in (0, 1)")
        milestones = self.lr_milestones
        fractions = isinstance(milestones, tuple) and all(
            isinstance(f, (int, float, np.integer, np.floating)) and not isinstance(f, bool) and 0 < f < 1
            for f in milestones)
        if not fractions or any(b <= a for a, b in zip(milestones, milestones[1:])):
            self._fail("lr_milestones", "a strictly increasing list of fractions of nb_stolen in (0, 1)", milestones)
        if self.seed is not None and (not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool)):
            self._fail("seed", "an integer or None", self.seed)
        if not isinstance(self.verbose, bool):
            self._fail("verbose", "a boolean", self.verbose)
        self._check_real("stealth_weight", 0, math.inf, False, True, "a non-negative number")
        self._check_int("stealth_pretrain_steps", 0)
        if self.stealth_weight > 0:
            ref = self.stealth_reference
            shape = tuple(self.estimator.input_shape)
            if not isinstance(ref, np.ndarray) or ref.ndim < 2 or tuple(ref.shape[1:]) != shape or len(ref) < 2:
                got = f"an array shaped {tuple(ref.shape)}" if isinstance(ref, np.ndarray) else type(ref).__name__
                self._fail("stealth_reference", f"at least 2 of the attacker's own inputs shaped (N, {shape}) when "
                           "stealth_weight > 0", got)
        self._check_victim()

    def _check_victim(self) -> None:
        name = type(self).__name__
        clip = self.estimator.clip_values
        if clip is None or np.size(clip) != 2 or not np.all(np.isfinite(np.asarray(clip, dtype=float))) \
                or not float(np.asarray(clip)[0]) < float(np.asarray(clip)[1]):
            raise ValueError(f"{name} maps generator outputs onto the victim's input range, so the victim needs "
                             f"scalar clip_values (min, max) with min < max. Got {clip!r} instead.")
        shape = tuple(self.estimator.input_shape or ())
        if len(shape) not in (1, 3):
            raise ValueError(f"{name} generates inputs shaped (C, H, W) or (d,); the victim's input_shape is "
                             f"{shape}.")
        if not self.estimator.nb_classes or self.estimator.nb_classes < 2:
            raise ValueError(f"{name} needs a victim with at least 2 classes. Got nb_classes="
                             f"{self.estimator.nb_classes!r} instead.")

    def _check_thief(self, thieved_classifier) -> None:
        name = type(self).__name__
        if not isinstance(thieved_classifier, PyTorchClassifier):
            raise ValueError(f"The thieved_classifier of {name} must be an ART PyTorchClassifier (its module is "
                             f"trained directly). Got {type(thieved_classifier).__name__} instead.")
        if tuple(thieved_classifier.input_shape) != tuple(self.estimator.input_shape):
            raise ValueError(f"The thieved_classifier's input_shape {tuple(thieved_classifier.input_shape)} does not "
                             f"match the victim's {tuple(self.estimator.input_shape)}.")
        if thieved_classifier.nb_classes != self.estimator.nb_classes:
            raise ValueError(f"The thieved_classifier has {thieved_classifier.nb_classes} classes, the victim "
                             f"{self.estimator.nb_classes}.")
        if thieved_classifier.preprocessing_operations and not thieved_classifier.all_framework_preprocessing:
            raise ValueError(f"{name} trains the thief's torch module directly, so the thieved_classifier's "
                             "preprocessing must be PyTorch operations (or none).")

    # -------------------------------------------------------------- the pieces subclasses change

    def _victim_targets(self, probs: torch.Tensor) -> torch.Tensor:
        """What the student matches: DFME's recovered logits, log p minus its per-sample mean."""
        log_p = torch.log(probs.clamp_min(self.prob_floor))
        return log_p - log_p.mean(dim=1, keepdim=True)

    def _per_sample_loss(self, student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """DFME's L1 loss per sample (mean over classes)."""
        return (student_logits - targets).abs().mean(dim=1)

    def _remember(self, x: torch.Tensor, probs: torch.Tensor) -> None:
        """Called with every unperturbed query and its answer (DFME keeps nothing; MAZE replays them)."""

    def _extra_student_steps(self, student: nn.Module, optimiser: torch.optim.Optimizer) -> None:
        """Student updates that cost no queries, after the student steps of an iteration (MAZE's replay)."""

    # -------------------------------------------------------------- the loop

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        """Ask the victim; count the queries; return its probabilities as a float32 tensor."""
        x_np = x.detach().cpu().numpy().astype(np.float32)
        answers = np.asarray(self.estimator.predict(x_np, batch_size=self.batch_size), dtype=np.float32)
        self.queries_used_ += len(x_np)
        if answers.shape != (len(x_np), self.estimator.nb_classes):
            raise ValueError(f"The victim answered shape {answers.shape} for {len(x_np)} queries; expected "
                             f"({len(x_np)}, {self.estimator.nb_classes}).")
        if not np.all(np.isfinite(answers)) or answers.min() < -1e-6 or answers.max() > 1 + 1e-4 \
                or np.any(answers.sum(axis=1) > 1 + 1e-3):
            raise ValueError(f"{type(self).__name__} needs the victim's class probabilities, but predict returned "
                             "values outside the probability simplex (logits?). Put a softmax on the victim's output.")
        return torch.from_numpy(answers).to(x.device)

    def _student_logits(self, x: torch.Tensor) -> torch.Tensor:
        x_pre, _ = self._thief._apply_preprocessing(x, None, fit=True, no_grad=False)
        out = self._student(x_pre)
        return out[-1] if isinstance(out, (list, tuple)) else out

    def _set_learning_rates(self, optimisers: list[tuple[torch.optim.Optimizer, float]]) -> None:
        spent = self.queries_used_ / self.nb_stolen
        factor = self.lr_gamma ** sum(spent >= m for m in self.lr_milestones)
        for opt, base in optimisers:
            for group in opt.param_groups:
                group["lr"] = base * factor

    def _latent(self) -> torch.Tensor:
        return torch.randn(self.batch_size, self.nz, generator=self._rng_z).to(self._device)

    def _generator_step(self, n: int) -> None:
        """One generator update on the first n samples of a batch: (m + 1) * n queries."""
        generator, clip = self.generator_, self.estimator.clip_values
        generator.train()
        x_pre = generator(self._latent(), pre_tanh=True)[:n]

        def disagreement(points_pre: torch.Tensor) -> torch.Tensor:
            x = to_input_range(torch.tanh(points_pre), clip)
            probs = self._query(x)
            self._remember(x[:n], probs[:n])  # the unperturbed points come first
            self._student.eval()
            with torch.no_grad():
                return self._per_sample_loss(self._student_logits(x), self._victim_targets(probs))

        grad = zeroth_order_gradient(disagreement, x_pre, self.nb_directions, self.epsilon, self._rng_u)
        self.optimiser_g_.zero_grad(set_to_none=True)
        if self.stealth_weight > 0:
            # ascend the disagreement (estimated) while descending the attacker's own atypicality estimate
            penalty = self._stealth_penalty(to_input_range(torch.tanh(x_pre), clip))
            ((x_pre * (-grad / n)).sum() + self.stealth_weight * penalty).backward()
        else:
            # ascend the mean disagreement: d(-mean L)/dx_i = -g_i / n
            x_pre.backward(-grad / n)
        self.optimiser_g_.step()

    def _student_step(self, n: int) -> float:
        """One student update on the first n samples of a fresh generator batch: n queries."""
        self.generator_.train()
        with torch.no_grad():
            x = to_input_range(self.generator_(self._latent())[:n], self.estimator.clip_values)
        probs = self._query(x)
        self._remember(x, probs)
        return self._train_student(x, probs)

    def _train_student(self, x: torch.Tensor, probs: torch.Tensor) -> float:
        self._student.train()
        loss = self._per_sample_loss(self._student_logits(x), self._victim_targets(probs)).mean()
        self.optimiser_s_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser_s_.step()
        return float(loss.detach())

    def _iter_checkpoints(self, checkpoints: list[int], *, x: np.ndarray | None, y: np.ndarray | None,
                          thieved_classifier: PyTorchClassifier) -> Iterator[tuple[int, PyTorchClassifier]]:
        """Run the attack (``x`` and ``y`` unused: it is data-free), stopping at the largest checkpoint.

        The same (trained-on) classifier is yielded each time, its module in eval mode; training
        resumes when the iterator is advanced.
        """
        from tqdm.auto import tqdm

        self._check_thief(thieved_classifier)
        pending = list(checkpoints)
        self._thief = thieved_classifier
        self._student = thieved_classifier.model
        weights = list(self._student.parameters())
        if not weights:
            raise ValueError(f"The thieved_classifier of {type(self).__name__} has no trainable parameters.")
        self._device = weights[0].device
        seed = 0 if self.seed is None else int(self.seed)
        # Separate streams for latents and directions, independent of the global RNGs.
        self._rng_z = torch.Generator().manual_seed(seed)
        self._rng_u = torch.Generator().manual_seed(seed + 1_000_003)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator_ = DataFreeGenerator(self.estimator.input_shape, self.nz, self.generator_width)
        self.generator_.to(self._device)
        self.optimiser_s_ = torch.optim.SGD(self._student.parameters(), lr=self.lr_student,
                                            momentum=self.momentum, weight_decay=self.weight_decay)
        self.optimiser_g_ = torch.optim.Adam(self.generator_.parameters(), lr=self.lr_generator)
        self.queries_used_ = 0
        self.iterations_ = 0
        self._start()
        schedule = [(self.optimiser_s_, self.lr_student), (self.optimiser_g_, self.lr_generator)]
        per_generator_sample = self.nb_directions + 1
        bar = tqdm(total=pending[-1], desc=type(self).__name__, unit="query", disable=not self.verbose, leave=False)
        try:
            while pending:
                self._set_learning_rates(schedule)
                for _ in range(self.n_generator_steps):
                    n = min(self.batch_size, (pending[0] - self.queries_used_) // per_generator_sample)
                    if n > 0:
                        before = self.queries_used_
                        self._generator_step(n)
                        bar.update(self.queries_used_ - before)
                for _ in range(self.n_student_steps):
                    n = min(self.batch_size, pending[0] - self.queries_used_)
                    if n > 0:
                        self._student_step(n)
                        bar.update(n)
                self._extra_student_steps(self._student, self.optimiser_s_)
                self.iterations_ += 1
                if self.queries_used_ == pending[0]:
                    pending.pop(0)
                    self._student.eval()
                    self.generator_.eval()
                    yield self.queries_used_, thieved_classifier
        finally:
            bar.close()
            self._student.eval()
            self.generator_.eval()

    def _start(self) -> None:
        """Per-run state (reset at every ``iter_checkpoints``); subclasses extend it."""
        if self.stealth_weight > 0:
            ref = torch.from_numpy(np.asarray(self.stealth_reference, dtype=np.float32)).flatten(1).to(self._device)
            self._stealth_mean = ref.mean(dim=0)
            self._stealth_std = ref.std(dim=0).clamp_min(0.05)
            if self.stealth_pretrain_steps:
                self._stealth_pretrain()

    def _stealth_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared per-pixel z-score under the attacker's Gaussian estimate (inputs in the victim's range)."""
        return (((x.flatten(1) - self._stealth_mean) / self._stealth_std) ** 2).mean()

    def _stealth_pretrain(self) -> None:
        """Query-free generator steps towards images the attacker's estimate finds typical."""
        optimiser = torch.optim.Adam(self.generator_.parameters(), lr=1e-3)
        self.generator_.train()
        for _ in range(self.stealth_pretrain_steps):
            x = to_input_range(self.generator_(self._latent()), self.estimator.clip_values)
            loss = self._stealth_penalty(x)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    def extract(self, x: np.ndarray | None = None, y: np.ndarray | None = None, **kwargs) -> PyTorchClassifier:
        """Steal the victim with ``nb_stolen`` queries and return ``thieved_classifier`` trained.

        :param x: unused (the attack is data-free); accepted for ART's interface.
        :param y: unused.
        :param thieved_classifier: an ART ``PyTorchClassifier`` whose module outputs logits.
        """
        thieved_classifier = kwargs.get("thieved_classifier")
        if thieved_classifier is None:
            raise ValueError(f"{type(self).__name__}.extract needs the keyword argument thieved_classifier "
                             "(an ART PyTorchClassifier).")
        return self._run_to(self.nb_stolen, thieved_classifier=thieved_classifier)


# ---------------------------------------------------------------- MAZE


class _ReplayBuffer:
    """A bounded, seeded reservoir of (query, answer) pairs: a uniform sample of everything seen."""

    def __init__(self, capacity: int, seed: int):
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.size = 0
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.capacity == 0:
            return
        x, y = x.detach(), y.detach()
        if self.x is None:
            self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.y = torch.empty((self.capacity, *y.shape[1:]), dtype=y.dtype, device=y.device)
        for i in range(len(x)):
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:  # reservoir sampling (Algorithm R): keep the new item with probability capacity / seen
                slot = int(self.rng.integers(0, self.seen + 1))
                if slot >= self.capacity:
                    self.seen += 1
                    continue
            self.x[slot] = x[i]
            self.y[slot] = y[i]
            self.seen += 1

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(self.rng.integers(0, self.size, size=min(n, self.size)))
        return self.x[idx], self.y[idx]


class MAZE(DataFreeModelExtraction):
    """MAZE (Kariyappa, Prakash and Qureshi, CVPR 2021): data-free extraction with zeroth-order gradients.

    Built on :class:`DataFreeModelExtraction` (same generator, query accounting, optimisers and
    schedule); what differs, and the choices we made:

    * loss: the KL divergence KL(victim || student) between the victim's probabilities and the
      student's softmax, per sample summed over classes, for both the student (minimised) and
      the generator (maximised). No logit recovery is needed (``prob_floor`` only guards log 0
      in the victim's entropy term, where 0 log 0 = 0).
    * ``nb_directions`` = 10 random directions per sample for the gradient estimate (MAZE's m),
      in the generator's pre-tanh space with ``epsilon`` = 1e-3 as in DFME: a generator step on
      b samples therefore costs 11 b queries.
    * experience replay: every unperturbed query the attack makes (generator-step base points and
      student-step batches) is stored with the victim's answer in a bounded buffer of
      ``replay_capacity`` samples (reservoir sampling, so the buffer stays a uniform sample of all
      past queries; MAZE keeps all of them, which does not fit in memory at millions of queries:
      784 floats per MNIST image). After the student steps of each iteration the student takes
      ``n_replay_steps`` more SGD steps on batches of ``batch_size`` drawn from the buffer. Replay
      re-uses answers already paid for: it costs no queries. Near-duplicate perturbed points of the
      gradient estimate are not stored. The default of 20 replay steps per iteration is ours
      (measured on a conv3 MNIST victim at 100k queries, generator width 16: fidelity 0.11 with 5
      replay steps, 0.66 with 20, 0.79 with 50): at the budgets stealcheck scenarios use, a student
      trained only on fresh queries gets a few hundred SGD steps and does not leave its initial
      constant-output plateau; replay steps cost compute only.
    * everything else (generator architecture, batch 256, 1 generator and 5 student steps per
      iteration, student SGD 0.1 / momentum 0.9 / weight decay 5e-4, generator Adam 1e-4, learning
      rates x0.3 at 10/30/50% of the budget) is DFME's reference setting, shared for comparability.
    """

    attack_params = DataFreeModelExtraction.attack_params + ["replay_capacity", "n_replay_steps"]

    def __init__(self, classifier, nb_stolen: int = 2_000_000, batch_size: int = 256, nz: int = 256,
                 generator_width: int = 64, n_generator_steps: int = 1, n_student_steps: int = 5,
                 lr_student: float = 0.1, lr_generator: float = 1e-4, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nb_directions: int = 10, epsilon: float = 1e-3,
                 lr_milestones: Sequence[float] = (0.1, 0.3, 0.5), lr_gamma: float = 0.3,
                 prob_floor: float = 1e-8, replay_capacity: int = 20_000, n_replay_steps: int = 20,
                 seed: int | None = None, verbose: bool = False, stealth_weight: float = 0.0,
                 stealth_reference: np.ndarray | None = None, stealth_pretrain_steps: int = 0) -> None:
        """
        Parameters as :class:`DataFreeModelExtraction`, with MAZE's ``nb_directions`` = 10, and:

        :param replay_capacity: samples kept for experience replay (0: no replay).
        :param n_replay_steps: student steps on replayed samples per iteration (0: no replay).
        """
        self.replay_capacity = replay_capacity
        self.n_replay_steps = n_replay_steps
        super().__init__(classifier, nb_stolen=nb_stolen, batch_size=batch_size, nz=nz,
                         generator_width=generator_width, n_generator_steps=n_generator_steps,
                         n_student_steps=n_student_steps, lr_student=lr_student, lr_generator=lr_generator,
                         momentum=momentum, weight_decay=weight_decay, nb_directions=nb_directions,
                         epsilon=epsilon, lr_milestones=lr_milestones, lr_gamma=lr_gamma, prob_floor=prob_floor,
                         seed=seed, verbose=verbose, stealth_weight=stealth_weight,
                         stealth_reference=stealth_reference, stealth_pretrain_steps=stealth_pretrain_steps)

    def _check_params(self) -> None:
        super()._check_params()
        self._check_int("replay_capacity", 0)
        self._check_int("n_replay_steps", 0)

    def _victim_targets(self, probs: torch.Tensor) -> torch.Tensor:
        return probs

    def _per_sample_loss(self, student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """KL(victim || student) per sample."""
        entropy_term = torch.where(targets > 0, targets * torch.log(targets.clamp_min(self.prob_floor)),
                                   torch.zeros_like(targets))
        return (entropy_term - targets * F.log_softmax(student_logits, dim=1)).sum(dim=1)

    def _start(self) -> None:
        super()._start()
        capacity = min(self.replay_capacity, self.nb_stolen) if self.n_replay_steps > 0 else 0
        self.replay_ = _ReplayBuffer(capacity, 0 if self.seed is None else int(self.seed) + 2_000_003)

    def _remember(self, x: torch.Tensor, probs: torch.Tensor) -> None:
        self.replay_.add(x, probs)

    def _extra_student_steps(self, student: nn.Module, optimiser: torch.optim.Optimizer) -> None:
        if self.replay_.size == 0:
            return
        for _ in range(self.n_replay_steps):
            x, probs = self.replay_.sample(self.batch_size)
            self._train_student(x, probs)


# ---------------------------------------------------------------- stealcheck plugins


def _run_data_free(attack_class, params: BaseModel, ctx: AttackContext) -> Iterator[tuple[int, ThiefClassifier]]:
    kwargs = params.model_dump()
    kwargs["lr_milestones"] = tuple(kwargs["lr_milestones"])
    role = kwargs.pop("stealth_data")
    if role is not None and kwargs["stealth_weight"] > 0:
        if ctx.load_data is None:
            raise ValueError(f"stealth_data '{role}' needs the scenario's data sets")
        kwargs["stealth_reference"] = np.asarray(ctx.load_data(role).x, dtype=np.float32)
    attack = attack_class(classifier=ctx.oracle, nb_stolen=max(ctx.budgets), seed=ctx.seed, verbose=ctx.progress,
                          **kwargs)
    # The student trains continuously across checkpoints (thief.warm_start and the thief's own
    # fit schedule do not apply: the attack has its own optimiser).
    yield from attack.iter_checkpoints(ctx.budgets, thieved_classifier=ctx.make_thief())


class DFMEAttack:
    """DFME (Truong et al. 2021): data-free extraction with a generator and zeroth-order gradients; no pool needed.

    The thief's architecture comes from the scenario; its training recipe (epochs, lr, steps)
    does not apply: the attack trains it with its own SGD schedule as queries accrue.
    """

    extraction_class = DataFreeModelExtraction

    def __init__(self, params: DFMEParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ThiefClassifier]]:
        yield from _run_data_free(DataFreeModelExtraction, self.params, ctx)


class MAZEAttack:
    """MAZE (Kariyappa et al. 2021): DFME-style data-free extraction with KL loss, 10 directions and replay.

    The thief's architecture comes from the scenario; its training recipe does not apply.
    """

    extraction_class = MAZE

    def __init__(self, params: MAZEParams):
        self.params = params

    def run(self, ctx: AttackContext) -> Iterator[tuple[int, ThiefClassifier]]:
        yield from _run_data_free(MAZE, self.params, ctx)
