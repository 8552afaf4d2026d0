"""SAME (Sample reconstruction Against Model Extraction): a masked autoencoder and an auxiliary model
score each query by how badly it is reconstructed and how much the victim disagrees with a model
trained on reconstructions.

Three registered variants share one trained MAE + auxiliary model (through ``ctx.cache``):

- ``same``:   alpha * s1 + (1 - alpha) * s2, optionally with each term z-scored on benign data;
- ``same_x``: s1 only — per-sample MSE between the query and its unmasked MAE reconstruction;
- ``same_y``: s2 only — KL(victim(x) || aux(x_hat)), averaged over classes as in the authors' script.

The MAE is written here from timm's ViT ``Block`` (He et al. 2022 layout: patch embedding, position
embedding, random masking, encoder, light decoder with mask tokens, linear per-patch pixel head).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from stealcheck.cache import fingerprint

from .detectors import Detector, DetectorContext
from .specs import SameModelParams

#: bump when what a cached SAME model entry contains, or how it is trained, changes
SAME_MODEL_FORMAT = 1
CACHE_KIND = "detectors-same"


# ---------------------------------------------------------------- params


# ---------------------------------------------------------------- the masked autoencoder


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings, (grid_h * grid_w, dim): half the channels encode rows."""
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    emb = np.concatenate([_sincos_1d(dim // 2, rows), _sincos_1d(dim // 2, cols)], axis=1)
    return torch.from_numpy(emb).float()


class MaskedAutoencoder(nn.Module):
    """A ViT masked autoencoder (He et al. 2022) from timm blocks, without a class token.

    ``forward(x, mask_ratio, generator)`` returns the reconstructed image (every patch predicted by
    the decoder) and the per-patch mask (1 = masked). With ``mask_ratio=0`` nothing is masked: the
    scoring setting of SAME.
    """

    def __init__(self, input_shape: tuple[int, ...], p: SameModelParams):
        super().__init__()
        from timm.models.vision_transformer import Block

        if len(input_shape) != 3:
            raise ValueError(f"SAME's masked autoencoder needs image inputs shaped (C, H, W). "
                             f"Got input shape {tuple(input_shape)} instead.")
        c, h, w = (int(s) for s in input_shape)
        ps = p.patch_size
        if h % ps or w % ps:
            raise ValueError(f"The 'patch_size' parameter of SAME must divide the input's height and width "
                             f"({h}x{w}). Got {ps} instead; e.g. use one of "
                             f"{[d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]}.")
        self.channels, self.height, self.width, self.patch_size = c, h, w, ps
        self.grid = (h // ps, w // ps)
        n_patches = self.grid[0] * self.grid[1]
        patch_dim = c * ps * ps

        self.patch_embed = nn.Conv2d(c, p.embed_dim, kernel_size=ps, stride=ps)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, p.decoder_embed_dim))
        learned = p.pos_embed == "learned"
        if learned:
            self.pos_embed = nn.Parameter(torch.zeros(1, n_patches, p.embed_dim))
            self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n_patches, p.decoder_embed_dim))
        else:  # buffers: saved with the state, never trained
            self.register_buffer("pos_embed", sincos_pos_embed(p.embed_dim, *self.grid)[None])
            self.register_buffer("decoder_pos_embed", sincos_pos_embed(p.decoder_embed_dim, *self.grid)[None])
        self.blocks = nn.ModuleList([Block(p.embed_dim, p.num_heads, mlp_ratio=p.mlp_ratio, qkv_bias=True)
                                     for _ in range(p.depth)])
        self.norm = nn.LayerNorm(p.embed_dim)
        self.decoder_embed = nn.Linear(p.embed_dim, p.decoder_embed_dim)
        self.decoder_blocks = nn.ModuleList([Block(p.decoder_embed_dim, p.decoder_num_heads,
                                                   mlp_ratio=p.mlp_ratio, qkv_bias=True)
                                             for _ in range(p.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(p.decoder_embed_dim)
        self.decoder_pred = nn.Linear(p.decoder_embed_dim, patch_dim)
        self._init_weights(learned)

    def _init_weights(self, learned_pos: bool) -> None:
        if learned_pos:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.weight.shape[0], -1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, C * p * p)."""
        b, ps = x.shape[0], self.patch_size
        gh, gw = self.grid
        x = x.reshape(b, self.channels, gh, ps, gw, ps)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, self.channels * ps * ps)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, L, C * p * p) -> (B, C, H, W)."""
        b, ps = patches.shape[0], self.patch_size
        gh, gw = self.grid
        x = patches.reshape(b, gh, gw, self.channels, ps, ps)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(b, self.channels, self.height, self.width)

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, L, D)
        b, n, d = tokens.shape
        n_keep = n - int(round(n * mask_ratio)) if mask_ratio > 0 else n
        n_keep = max(1, n_keep)
        if n_keep < n:
            # Per-sample random masking: keep the patches with the n_keep smallest noise values.
            noise = torch.rand(b, n, generator=generator).to(x.device)
            order = noise.argsort(dim=1)
            restore = order.argsort(dim=1)
            keep = order[:, :n_keep]
            tokens = tokens.gather(1, keep[..., None].expand(-1, -1, d))
            mask = torch.ones(b, n, device=x.device)
            mask[:, :n_keep] = 0
            mask = mask.gather(1, restore)
        else:
            restore = None
            mask = torch.zeros(b, n, device=x.device)
        for blk in self.blocks:
            tokens = blk(tokens)
        tokens = self.decoder_embed(self.norm(tokens))
        if restore is not None:
            fill = self.mask_token.expand(b, n - n_keep, -1)
            tokens = torch.cat([tokens, fill], dim=1)
            tokens = tokens.gather(1, restore[..., None].expand(-1, -1, tokens.shape[2]))
        tokens = tokens + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            tokens = blk(tokens)
        patches = self.decoder_pred(self.decoder_norm(tokens))
        return self.unpatchify(patches), mask

    def loss(self, x: torch.Tensor, recon: torch.Tensor, mask: torch.Tensor, on: str) -> torch.Tensor:
        """Mean per-patch pixel MSE over all patches, or over the masked ones only."""
        per_patch = ((self.patchify(recon) - self.patchify(x)) ** 2).mean(dim=2)  # (B, L)
        if on == "masked" and mask.sum() > 0:
            return (per_patch * mask).sum() / mask.sum()
        return per_patch.mean()


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero (the MAE recipe)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def unmasked_error(mae: MaskedAutoencoder, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Per-sample MSE of the unmasked reconstruction (SAME's scoring setting)."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32))
            out.append(((mae(xb, 0.0)[0] - xb) ** 2).flatten(1).mean(dim=1).double().numpy())
    return np.concatenate(out) if out else np.empty((0,))


def train_mae(mae: MaskedAutoencoder, x: np.ndarray, p: SameModelParams, seed: int,
              progress: bool = False, x_val: np.ndarray | None = None) -> list[float]:
    """Train ``mae`` on images ``x`` with AdamW, warm-up + cosine; returns the mean loss of each epoch.

    With ``x_val`` (benign held-out images) the weights of the epoch with the lowest mean unmasked
    reconstruction error on ``x_val`` are restored at the end; ``mae.val_history`` and
    ``mae.best_epoch`` record the choice."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    gen = torch.Generator().manual_seed(int(seed))
    bs = min(p.batch_size, len(xt))
    per_epoch = math.ceil(len(xt) / bs)
    total = p.epochs * per_epoch
    warmup = int(round(p.warmup_epochs * per_epoch))
    opt = torch.optim.AdamW(mae.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, warmup, total))
    mae.train()
    history: list[float] = []
    val_history: list[float] = []
    best: tuple[float, int, dict] | None = None
    bar = tqdm(total=total, desc="training SAME's MAE", disable=not progress, leave=False, unit="step")
    for epoch in range(p.epochs):
        perm = torch.randperm(len(xt), generator=gen)
        losses = []
        for i in range(0, len(xt), bs):
            xb = xt[perm[i:i + bs]]
            recon, mask = mae(xb, p.mask_ratio, gen)
            loss = mae.loss(xb, recon, mask, p.loss_on)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        history.append(float(np.mean(losses)))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
        if x_val is not None and len(x_val):
            mae.eval()
            val_history.append(float(unmasked_error(mae, x_val).mean()))
            mae.train()
            if best is None or val_history[-1] < best[0]:
                best = (val_history[-1], epoch, {k: v.detach().clone() for k, v in mae.state_dict().items()})
    bar.close()
    if best is not None:
        mae.load_state_dict(best[2])
    mae.val_history = val_history
    mae.best_epoch = best[1] if best is not None else p.epochs - 1
    mae.eval()
    return history


# ---------------------------------------------------------------- the detector


class _SameBase(Detector):
    """Shared machinery of same, same_x and same_y: building, training (or loading from the cache)
    the MAE and the auxiliary model, and computing both raw terms."""

    needs_network = True

    def setup(self, ctx: DetectorContext) -> None:
        super().setup(ctx)
        self.mae_ = MaskedAutoencoder(tuple(ctx.input_shape), self.params).eval()
        self.aux_ = ctx.make_network() if ctx.make_network is not None else None
        if self.aux_ is not None:
            self.aux_.eval()
        self.term_mean_ = np.zeros(2)
        self.term_std_ = np.ones(2)
        self.cache_hit_ = False
        self.mae_loss_history_: list[float] = []

    # -- training ------------------------------------------------------------------------------
    def _model_cache_key(self, ctx: DetectorContext) -> str | None:
        if ctx.cache is None or ctx.identity is None or not self.params.cache:
            return None
        return fingerprint({"identity": ctx.identity, "same_model": self.params.model_key(),
                            "input_shape": list(ctx.input_shape), "seed": ctx.seed,
                            "format": SAME_MODEL_FORMAT, "torch": torch.__version__})

    def _fit(self, ctx: DetectorContext) -> None:
        if ctx.train.y is None:
            raise ValueError("SAME needs the victim's labelled training data (ctx.train.y) to train its auxiliary model")
        key = self._model_cache_key(ctx)
        if key is not None and ctx.cache.has(CACHE_KIND, key):
            entry = ctx.cache.path(CACHE_KIND, key)
            self.mae_.load_state_dict(torch.load(entry / "mae.pt", map_location="cpu", weights_only=True))
            self.aux_.load_state_dict(torch.load(entry / "aux.pt", map_location="cpu", weights_only=True))
            self.cache_hit_ = True
        else:
            self._train_models(ctx)
            if key is not None:
                with ctx.cache.writer(CACHE_KIND, key) as tmp:
                    torch.save(self.mae_.state_dict(), tmp / "mae.pt")
                    torch.save(self.aux_.state_dict(), tmp / "aux.pt")
        self.mae_.eval()
        self.aux_.eval()
        self._fit_scoring(ctx)

    def _train_models(self, ctx: DetectorContext) -> None:
        from stealcheck.adapters.networks import fit_network, one_hot

        p = self.params
        torch.manual_seed(ctx.seed)  # weight initialisation of both models
        self.mae_ = MaskedAutoencoder(tuple(ctx.input_shape), p)
        x_train, x_val = ctx.train.x, None
        if p.checkpoint == "benign_val":
            perm = np.random.default_rng(ctx.seed + 15485863).permutation(len(x_train))
            n_val = max(1, int(round(p.val_fraction * len(x_train))))
            x_train, x_val = x_train[np.sort(perm[n_val:])], x_train[np.sort(perm[:n_val])]
        self.mae_loss_history_ = train_mae(self.mae_, x_train, p, ctx.seed, ctx.progress, x_val=x_val)
        self.aux_ = ctx.make_network()
        mae = self.mae_
        gen = torch.Generator().manual_seed(int(ctx.seed) + 1)

        def reconstruct_masked(xb: torch.Tensor) -> torch.Tensor:
            # A fresh random mask for every batch: the auxiliary model sees the MAE's output distribution.
            with torch.no_grad():
                return mae(xb, p.mask_ratio, gen)[0]

        recipe = ctx.train_recipe
        fit_network(self.aux_, ctx.train.x, one_hot(ctx.train.y, ctx.nb_classes),
                    steps=p.aux_steps or int(recipe.get("steps", 800)),
                    batch_size=p.aux_batch_size or int(recipe.get("batch_size", 64)),
                    lr=p.aux_lr or float(recipe.get("lr", 3e-3)), seed=ctx.seed,
                    preprocess=reconstruct_masked, desc="training SAME's auxiliary model", progress=ctx.progress)

    def _fit_scoring(self, ctx: DetectorContext) -> None:
        """Per-variant fitting after the shared models exist (the standardisation statistics)."""

    # -- scoring -------------------------------------------------------------------------------
    def _terms_batch(self, x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        with torch.inference_mode():
            recon, _ = self.mae_(xt, 0.0)
            s1 = ((recon - xt) ** 2).flatten(1).mean(dim=1).double()
            log_q = F.log_softmax(self.aux_(recon).double(), dim=1)
            p_victim = torch.from_numpy(np.asarray(self._ctx.predict_proba(x), dtype=np.float64))
            # KL(p || q) per class, averaged over classes (the authors' KLDivLoss(reduction='none') + mean)
            s2 = (torch.special.xlogy(p_victim, p_victim) - p_victim * log_q).mean(dim=1)
        return torch.stack([s1, s2], dim=1).numpy()

    def _raw_terms(self, x: np.ndarray) -> np.ndarray:
        if self._ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(ctx) or load(folder, ctx) first")
        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.empty((0, 2))
        if tuple(x.shape[1:]) != (self.mae_.channels, self.mae_.height, self.mae_.width):
            raise ValueError(f"SAME was fitted on inputs shaped {(self.mae_.channels, self.mae_.height, self.mae_.width)}. "
                             f"Got {tuple(x.shape[1:])} instead.")
        bs = self.params.score_batch_size
        return np.concatenate([self._terms_batch(x[i:i + bs]) for i in range(0, len(x), bs)])

    def terms(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Both raw terms per query: ``reconstruction`` (s1, MSE of the unmasked reconstruction) and
        ``deviation`` (s2, KL of the victim on x against the auxiliary model on the reconstruction)."""
        t = self._raw_terms(x)
        return {"reconstruction": t[:, 0], "deviation": t[:, 1]}

    def masked_reconstruction_error(self, x: np.ndarray, draws: int, ratio: float, seed: int = 0) -> np.ndarray:
        """Per-sample MSE on masked patches, averaged over ``draws`` random masks of ``ratio`` (seeded)."""
        gen = torch.Generator().manual_seed(int(seed))
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        total = torch.zeros(len(xt), dtype=torch.float64)
        with torch.inference_mode():
            for _ in range(draws):
                recon, mask = self.mae_(xt, ratio, gen)
                per_patch = ((self.mae_.patchify(recon) - self.mae_.patchify(xt)) ** 2).mean(dim=2)
                total += ((per_patch * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)).double()
        return (total / draws).numpy()

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Unmasked MAE reconstructions of ``x`` (for inspection and reports)."""
        with torch.inference_mode():
            return self.mae_(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), 0.0)[0].numpy()

    # -- persistence ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"mae": self.mae_.state_dict(), "aux": self.aux_.state_dict(),
                "term_mean": torch.from_numpy(np.asarray(self.term_mean_, dtype=np.float64)),
                "term_std": torch.from_numpy(np.asarray(self.term_std_, dtype=np.float64))}

    def load_state(self, state: dict[str, Any]) -> None:
        self.mae_.load_state_dict(state["mae"])
        self.aux_.load_state_dict(state["aux"])
        self.mae_.eval()
        self.aux_.eval()
        self.term_mean_ = state["term_mean"].numpy()
        self.term_std_ = state["term_std"].numpy()


class SameDetector(_SameBase):
    """SAME: masked-autoencoder reconstruction error plus victim-vs-auxiliary deviation (Xie et al., AAAI 2024).

    What the defender needs: the victim's own labelled training data (the MAE and the auxiliary
    model train on it), black-box access to the victim's probabilities, and the victim's
    architecture (the auxiliary model is a fresh network of it, trained on MAE reconstructions with
    the true labels). No auxiliary outlier data, no per-client query history, no white-box access
    to the trained victim's weights, and the victim is not retrained (its accuracy is unchanged).

    Score of a query x (higher = more suspicious), with x_hat the MAE's reconstruction without
    masking: s1 = mean squared pixel error of x_hat; s2 = KL(victim(x) || aux(x_hat)) averaged over
    classes; score = alpha * s1 + (1 - alpha) * s2. The raw terms live on different scales (with
    alpha = 0.99 the sum is mostly s1); ``standardize: true`` first z-scores each term with its mean
    and standard deviation on benign data — ``ctx.calibration`` when the scenario provides it, else
    the training data (on which s1 is optimistically low, since the MAE trained on it).
    """

    def _fit_scoring(self, ctx: DetectorContext) -> None:
        if not self.params.standardize:
            return
        benign = ctx.calibration if ctx.calibration is not None and len(ctx.calibration) > 1 else ctx.train
        x = benign.x
        if len(x) > 5000:  # the statistics settle long before; keeps fitting cheap on big sets
            x = x[np.random.default_rng(ctx.seed).choice(len(x), 5000, replace=False)]
        t = self._raw_terms(x)
        self.term_mean_ = t.mean(axis=0)
        self.term_std_ = np.maximum(t.std(axis=0), 1e-12)

    def score(self, x: np.ndarray) -> np.ndarray:
        t = self._raw_terms(x)
        if self.params.standardize:
            t = (t - self.term_mean_) / self.term_std_
        a = self.params.alpha
        return a * t[:, 0] + (1.0 - a) * t[:, 1]


class SameXDetector(_SameBase):
    """SAME-X: SAME's reconstruction term only (per-sample MSE of the unmasked MAE reconstruction).

    Needs what SAME needs (the victim's training data; the auxiliary model is trained too so that
    the shared cache entry serves all three variants, but it does not enter this score).
    """

    def score(self, x: np.ndarray) -> np.ndarray:
        return self._raw_terms(x)[:, 0]


class SameYDetector(_SameBase):
    """SAME-Y: SAME's deviation term only (KL of the victim on x against the auxiliary model on x_hat).

    Needs what SAME needs: the victim's labelled training data, black-box victim probabilities and
    the victim's architecture for the auxiliary model.
    """

    def score(self, x: np.ndarray) -> np.ndarray:
        return self._raw_terms(x)[:, 1]
