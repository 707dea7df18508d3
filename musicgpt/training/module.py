"""The LightningModule: a thin wrapper that gives the plain `GPT` a loss, an optimizer and a schedule.

Everything about the network lives in `musicgpt.model.gpt`; everything about the trainer
(devices, precision, checkpoints) lives in the YAML config's `trainer:` section.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities.enums import GradClipAlgorithmType

from musicgpt.model.gpt import GPT, GPTConfig

LN2 = math.log(2)


@dataclass
class OptimizerConfig:
    """AdamW with linear warmup then cosine decay to `min_lr_ratio * lr`.

    `decay_steps` None decays over the whole run (the trainer's estimated number of steps).
    """

    lr: float = 6e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    decay_steps: int | None = None
    min_lr_ratio: float = 0.1


def lr_multiplier(step: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> float:
    """The schedule as a pure function of the optimizer step (multiplies the base lr)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class MusicGPTModule(L.LightningModule):
    """Next-token prediction with cross-entropy, logged in nats and bits per token."""

    def __init__(
        self,
        config: GPTConfig,
        optimizer: OptimizerConfig | None = None,
        compile: bool = False,
        tokenizer: dict[str, Any] | None = None,
        init_from: str | None = None,
    ):
        """`tokenizer`: the data's tokenizer settings (`musicgpt train` links them from the data,
        with `config.vocab_size`); they travel in every checkpoint and exported model.
        `init_from`: start from a trained model's weights (a shipped model's name, a model or run
        directory, a .ckpt) instead of random ones; its config must equal `config`, but for a
        smaller vocabulary (ids appended since: its rows are copied, see `grow_vocabulary`). A resumed run
        loads its checkpoint over them, so `--resume` works the same."""
        super().__init__()
        self.config = config
        self.optim = optimizer or OptimizerConfig()
        self.compile = compile
        self.tokenizer = tokenizer
        # Plain dicts, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters({"config": config.to_dict(), "optimizer": asdict(self.optim)})
        self.model = GPT(config)
        if init_from is not None:
            self.model.load_state_dict(_initial_weights(init_from, config))

    def configure_model(self) -> None:
        if self.compile:
            # Module.compile compiles in place: parameter names (and so checkpoints) stay the same.
            self.model.compile()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The tokenizer travels with the weights, so a .ckpt alone is enough to generate.
        if self.tokenizer is not None:
            checkpoint["tokenizer"] = self.tokenizer

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        # The loss in fp32 even under bf16 autocast: a 390-way softmax in bf16 loses ~0.01 nats.
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/bits_per_token", loss / LN2)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss = self._loss(batch)
        n = batch[0].size(0)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/bits_per_token", loss / LN2, sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        # Weight decay on matrices only (linear and embedding weights), never on biases or
        # LayerNorm gains: decaying those only pulls them towards zero for no regularizing gain.
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.optim.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.optim.lr,
            betas=tuple(self.optim.betas),
            eps=self.optim.eps,
            # One kernel for the whole update instead of a dozen passes over every tensor; not with
            # fp16's loss scaler, which Lightning will not combine with a fused optimizer.
            fused=_loss_scaler(self.trainer) is None
            and all(p.device.type in ("cpu", "cuda") for p in params),
        )
        decay_steps = self.optim.decay_steps or int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: lr_multiplier(step, self.optim.warmup_steps, decay_steps, self.optim.min_lr_ratio),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # Lightning's mixed-precision plugin refuses to clip for a fused optimizer, in case a loss
        # scaler left the gradients scaled. bf16-mixed has no scaler: the gradients are the true
        # ones, so they are clipped here as in full precision.
        if (
            gradient_clip_val
            and isinstance(self.trainer.precision_plugin, MixedPrecision)
            and _loss_scaler(self.trainer) is None
            and any(group.get("fused") for group in optimizer.param_groups)
        ):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == GradClipAlgorithmType.VALUE:
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


def _initial_weights(source: str, config: GPTConfig) -> dict[str, torch.Tensor]:
    """The weights of the model `source` names, checked to fit `config` (one line if not)."""
    from musicgpt.checkpoints import load_checkpoint
    from musicgpt.errors import ConfigError

    model, _ = load_checkpoint(source)
    theirs, ours = model.config.to_dict(), config.to_dict()
    # a vocabulary that grew at its end (the FIM tokens after EOS and PAD): the old rows carry over
    grows = theirs["vocab_size"] < ours["vocab_size"]
    if grows:
        theirs.pop("vocab_size"), ours.pop("vocab_size")
    if ours["position_encoding"] != "learned":
        # Relative and rotary positions have no table sized by the window: a model trained on
        # 512-token windows can go on training on longer ones.
        theirs.pop("block_size"), ours.pop("block_size")
    if theirs != ours:
        diff = ", ".join(
            f"{k}: {theirs.get(k)} vs {ours.get(k)}" for k in ours if theirs.get(k) != ours.get(k)
        )
        raise ConfigError(f"model.init_from {source}: its config differs from model.config ({diff})")
    # fp32 master weights whatever the source was stored in (the shipped models are bf16)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    if grows:
        weights = grow_vocabulary(weights, config.vocab_size)
    return weights


def grow_vocabulary(weights: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """`weights` with the token table (wte, and the lm_head tied to it) grown to `vocab_size` rows.

    The old rows stay; each new row is the mean of the old ones plus a little noise (a tenth of
    their spread, seeded): a new token starts as an average token, whose logit is the average
    logit, rather than as a random direction the model has never read; the noise lets the new
    tokens part as they train. The output layer follows, being the same matrix."""
    old = weights["transformer.wte.weight"]
    n_new = vocab_size - old.shape[0]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(n_new, old.shape[1], generator=generator) * (0.1 * old.std(dim=0))
    grown = torch.cat([old, old.mean(dim=0, keepdim=True) + noise])
    out = dict(weights)
    out["transformer.wte.weight"] = grown
    if "lm_head.weight" in out:
        out["lm_head.weight"] = grown
    return out


def _loss_scaler(trainer) -> object | None:
    """fp16-mixed's GradScaler, or None (full precision, bf16)."""
    return getattr(trainer.precision_plugin, "scaler", None)
