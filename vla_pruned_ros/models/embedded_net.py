"""The embedded VLA's network: MiniLM text features conditioning a small conv vision stem
through FiLM, spatial-softmax keypoints, and one action head per embodiment (regression or a
Gaussian mixture). Pure torch (MiniLM from `models.minilm`, not transformers); no files, no
tokenizer, no policy interface."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vla_pruned_ros.models.embedded_config import (
    HEAD_KINDS,
    EmbeddedVLAConfig,
    minilm_hidden_size,
    minilm_path,
)
from vla_pruned_ros.models.minilm import MiniLM, MiniLMConfig, load_minilm


class FiLMConvBlock(nn.Module):
    """conv (stride 2) -> GroupNorm -> FiLM(text) -> ReLU. FiLM starts as the identity."""

    def __init__(self, c_in: int, c_out: int, d_text: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(8, c_out)
        self.film = nn.Linear(d_text, 2 * c_out)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(text).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        y = self.norm(self.conv(x))
        if torch.is_grad_enabled():  # autograd keeps `y` for the backward pass
            return F.relu(y * (1 + gamma) + beta)
        # Inference: the same three operations in place on the norm's fresh output, so the
        # numbers are bit for bit those above (a fused addcmul is not: it rounds once) and no
        # new feature map is allocated.
        return y.mul_(1 + gamma).add_(beta).relu_()


class EmbeddedVLA(nn.Module):
    """MiniLM text features -> FiLM-conditioned conv stem -> spatial-softmax keypoints -> one
    action head per embodiment (see the package docstring of `models.embedded`)."""

    def __init__(
        self,
        config: EmbeddedVLAConfig,
        text_model: MiniLM | None = None,
        *,
        text_width: int | None = None,
    ) -> None:
        """`text_model` None builds an untrained MiniLM skeleton (weights loaded later);
        `text_width` instead builds the model without any text encoder: the vision stem and
        heads only, fed text features computed elsewhere (`without_text`)."""
        super().__init__()
        self.config = config
        if text_model is None and text_width is None:
            text_model = MiniLM(MiniLMConfig.from_file(
                minilm_path() / "config.json", num_hidden_layers=config.text_layers))  # fmt: skip
        self.text = text_model
        d_text = text_width if text_model is None else self.text.config.hidden_size
        chans = (5, *config.channels)  # RGB + two pixel-coordinate channels (CoordConv)
        self.blocks = nn.ModuleList(
            FiLMConvBlock(a, b, d_text) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        # Spatial softmax turns each final feature map into the (x, y) of where it fires: the
        # standard visuomotor readout (Levine et al.), precise where pooling would blur.
        c = config.channels[-1]
        n = len(config.channels)
        if not config.keypoint_blocks or any(not -n <= b < n for b in config.keypoint_blocks):
            raise ValueError(
                f"keypoint_blocks {config.keypoint_blocks} must name some of the {n} conv "
                f"blocks (0..{n - 1}, or negative from the end)"
            )
        if config.action_head not in HEAD_KINDS or config.mixture_modes < 1:
            raise ValueError(
                f"action_head must be one of {HEAD_KINDS} (got {config.action_head!r}) and "
                f"mixture_modes >= 1 (got {config.mixture_modes})"
            )
        if config.head_layers < 1:
            raise ValueError(f"head_layers must be at least 1, got {config.head_layers}")
        visual = 2 * sum(config.channels[b] for b in config.keypoint_blocks) + c
        widths = [visual + d_text] + [config.head_hidden] * config.head_layers
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(
                    *(
                        m
                        for a, b in zip(widths[:-1], widths[1:], strict=True)
                        for m in (nn.Linear(a, b), nn.ReLU())
                    ),
                    nn.Linear(config.head_hidden, self._head_width(dims)),
                )
                for name, dims in config.action_dims.items()
            }
        )
        # Linear on purpose: the keypoints themselves must hold the positions, not a deep
        # readout that could decode them from anything.
        self.state_heads = nn.ModuleDict(
            {name: nn.Linear(visual, dims) for name, dims in config.state_dims.items()}
        )
        if self.text is not None:
            self.text.embeddings.word_embeddings.weight.requires_grad_(False)

    @classmethod
    def without_text(cls, config: EmbeddedVLAConfig) -> EmbeddedVLA:
        """The vision stem and action heads alone, for a caller that has the text features
        already (offline replay with cached instruction features, `models.instruction_cache`):
        building it reads no MiniLM weights and no encoder tensors. `encode_text` refuses;
        every frame-side method works and gives the same numbers as the full model with the
        same weights."""
        return cls(config, text_width=minilm_hidden_size())

    def _head_width(self, dims: int) -> int:
        if self.config.action_head == "gmm":  # per mode: a logit, dims means, dims log-stds
            return self.config.mixture_modes * (1 + 2 * dims)
        return dims

    @classmethod
    def from_minilm(cls, config: EmbeddedVLAConfig) -> EmbeddedVLA:
        """Start from the pretrained MiniLM (the 'base VLM' that divergence pruning compares to)."""
        return cls(config, load_minilm(minilm_path(), config.text_layers))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled MiniLM features (the sentence-transformers pooling), one row per text."""
        if self.text is None:
            raise RuntimeError(
                "this embedded VLA was built without its text encoder "
                "(EmbeddedVLA.without_text); load the full model to encode text"
            )
        hidden = self.text(input_ids, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def act_from_features(
        self, images: torch.Tensor, text: torch.Tensor, task: str
    ) -> torch.Tensor:
        """Normalised actions from images (B,H,W,3 uint8 or B,3,H,W float) and text features."""
        out = self.head_outputs(images, text, task)
        if self.config.action_head == "gmm":
            logits, means, _ = self.mixture(out, task)
            best = logits.argmax(dim=1)
            return means[torch.arange(len(best)), best]
        return torch.tanh(out)

    def mixture(
        self, out: torch.Tensor, task: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A mixture head's output (`head_outputs`) -> mode logits (B, M), means in [-1, 1] and
        log-stds (B, M, dims): public so that a probe of the mixture (research/head_fit.py)
        reads the modes the policy decodes, not a copy of this layout."""
        dims, modes = self.config.action_dims[task], self.config.mixture_modes
        logits, rest = out[:, :modes], out[:, modes:].view(-1, modes, 2, dims)
        log_std = rest[:, :, 1].clamp(-5.0, 1.0)  # std 0.007-2.7 of the bound: no collapse
        return logits, torch.tanh(rest[:, :, 0]), log_std

    def training_losses(
        self,
        images: torch.Tensor,
        text: torch.Tensor,
        task: str,
        target: torch.Tensor,
        state: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The behaviour-cloning loss on normalised targets as "action" (MSE for a regression
        head, negative log-likelihood per action dimension for a mixture head) and, given the
        scene state and a state readout for the task, its MSE as "state": one vision pass
        for both."""
        visual = self.visual_features(images, text)
        out = self.heads[task](torch.cat([visual, text], dim=1))
        losses = {"action": self._action_loss(out, task, target)}
        if state is not None:
            if task not in self.state_heads:
                raise ValueError(
                    f"no state readout for {task!r}: build the model with "
                    f"state_dims={{{task!r}: {state.shape[1]}}}"
                )
            losses["state"] = F.mse_loss(self.state_heads[task](visual), state.to(visual.dtype))
        return losses

    def _action_loss(self, out: torch.Tensor, task: str, target: torch.Tensor) -> torch.Tensor:
        if self.config.action_head != "gmm":
            return F.mse_loss(torch.tanh(out), target)
        logits, means, log_std = self.mixture(out, task)
        z = (target.unsqueeze(1) - means) / log_std.exp()
        per_mode = (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        nll = -torch.logsumexp(F.log_softmax(logits, dim=1) + per_mode, dim=1)
        return nll.mean() / target.shape[1]

    def head_outputs(self, images: torch.Tensor, text: torch.Tensor, task: str) -> torch.Tensor:
        """The action head's raw output: actions before tanh, or the mixture's parameters."""
        return self.heads[task](torch.cat([self.visual_features(images, text), text], dim=1))

    def visual_features(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Spatial-softmax keypoints of the chosen conv blocks and the last block's mean."""
        x = _stem_input(images, self.config.image_size, text.dtype)
        maps = []
        for block in self.blocks:
            x = block(x, text)
            maps.append(x)
        keypoints = [spatial_softmax(maps[b]) for b in self.config.keypoint_blocks]
        return torch.cat([*keypoints, x.mean(dim=(2, 3))], dim=1)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        text_index: torch.Tensor | None = None,
        task: str = "nav",
    ) -> torch.Tensor:
        """`text_index[i]` names the text row of image i, so a batch of many frames can share a
        few instructions and MiniLM runs once per distinct instruction."""
        text = self.encode_text(input_ids, attention_mask)
        if text_index is not None:
            text = text[text_index]
        return self.act_from_features(images, text, task)

    def unnormalise(self, actions: torch.Tensor, task: str) -> torch.Tensor:
        """Physical actions: the calibrated gain, clipped to the bound, times the bound."""
        gain = self.config.action_gain.get(task, 1.0)
        if gain != 1.0:
            actions = (actions * gain).clamp(-1.0, 1.0)
        return actions * torch.tensor(self.config.action_scale[task], dtype=actions.dtype)


def _stem_input(images: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """The conv stem's input: `preprocess_images`, cast to `dtype`, and the two coordinate
    channels (`_coords`), as (N, 5, H, W) in channels-last memory (the CPU conv kernels run
    ~20 % faster on it, training and inference alike).

    A float32 stem fed uint8 frames at its size (every camera frame, `frames.fit_frame`) gets
    them written straight into one N, H, W, 5 buffer: the same conversion, division and
    subtraction on the same values, so the same bits, without the concatenation's copy and
    the copy back to channels-last that the general path makes."""
    if (images.dtype == torch.uint8 and dtype == torch.float32 and images.dim() == 4
            and tuple(images.shape[1:]) == (size, size, 3)):  # fmt: skip
        n = images.shape[0]
        out = torch.empty(n, size, size, 5, dtype=dtype, device=images.device)
        out[..., :3] = images.to(dtype).div_(127.5).sub_(1.0)
        x = out.permute(0, 3, 1, 2)
        x[:, 3:] = _coords(x[:, 3:])
        return x
    x = preprocess_images(images, size).to(dtype)
    return torch.cat([x, _coords(x)], dim=1).contiguous(memory_format=torch.channels_last)


def _coords(x: torch.Tensor) -> torch.Tensor:
    """Two channels holding each pixel's x and y in [-1, 1]."""
    n, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    xs = torch.linspace(-1, 1, w, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    return torch.cat([xs, ys], dim=1)


def spatial_softmax(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 2C): the softmax-weighted mean pixel position of every channel."""
    n, c, h, w = x.shape
    weights = F.softmax(x.flatten(2), dim=-1).view(n, c, h, w)
    coords = _coords(x[:, :1])
    ex = (weights * coords[:, :1]).sum(dim=(2, 3))
    ey = (weights * coords[:, 1:]).sum(dim=(2, 3))
    return torch.cat([ex, ey], dim=1)


def preprocess_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 HWC batches -> float CHW in [-1, 1] at the model's resolution: the one tensor-side
    step between a frame and the network, run inside `visual_features` for training, calibration
    and inference alike.

    Camera frames reach it already at `size` through `frames.fit_frame` (area averaging, the
    one frame-side resize: the policy's `predict`, the simulator's camera, bag replay and
    calibration). The bilinear resize here only serves tensors handed in at another size, such
    as float batches built by hand."""
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images
