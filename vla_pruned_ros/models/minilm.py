"""MiniLM (a BERT encoder) and its WordPiece tokenizer in plain torch and `tokenizers`: the
embedded VLA's text side without transformers.

Why: `from transformers import BertModel` alone takes 3-4 s here, more than the whole start-up
budget of an offline replay or a policy node that meets a new instruction. This module imports
only torch, `tokenizers` (~10 ms) and safetensors.

Same model, same numbers: the module tree and parameter names are those of transformers'
`BertModel(add_pooling_layer=False)` (`embeddings.word_embeddings`, `encoder.layer.N.attention.
self.query`, ...), so every state dict, artifact, pruning mask and structured-removal record
made with either one loads into the other; and the forward pass makes the same torch calls
in the same order as transformers' SDPA path (the padding mask as a boolean (B, 1, L, L)
mask, none when nothing is padded), so its eval outputs equal BertModel's bit for bit
(test/models/test_minilm.py holds it to that, and the tokenizer to AutoTokenizer's ids).
Dropout is where BERT has it, for training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# The encoder implementation's name in the instruction-feature cache key
# (`embedded_config.minilm_identity`): bump it when the forward pass changes its numbers.
IMPLEMENTATION = "vla_pruned_ros.minilm/1"


@dataclass(frozen=True)
class MiniLMConfig:
    """The fields of a BERT config.json this encoder uses; `from_file` refuses the variants it
    does not implement rather than computing something else."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_file(cls, path: Path, **overrides: int) -> MiniLMConfig:
        data = json.loads(Path(path).read_text())
        unsupported = {
            "hidden_act": (data.get("hidden_act", "gelu"), "gelu"),
            "position_embedding_type": (
                data.get("position_embedding_type", "absolute"),
                "absolute",
            ),  # fmt: skip
            "is_decoder": (data.get("is_decoder", False), False),
        }
        for key, (got, want) in unsupported.items():
            if got != want:
                raise ValueError(f"{path}: {key} {got!r} is not implemented (only {want!r})")
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, **overrides})


class _Embeddings(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Token type 0 for every token (one sentence), positions 0..L-1, added in BERT's order.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        types = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(types)
        x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.attention_head_size = cfg.hidden_size // cfg.num_attention_heads
        # Kept up to date by structured head removal (`compression.structured`); the forward
        # pass reads the head count from the layers' widths.
        self.num_attention_heads = cfg.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(cfg.hidden_size, self.all_head_size)
        self.key = nn.Linear(cfg.hidden_size, self.all_head_size)
        self.value = nn.Linear(cfg.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        d = self.attention_head_size
        shape = (*x.shape[:-1], -1, d)
        q = self.query(x).view(shape).transpose(1, 2)
        k = self.key(x).view(shape).transpose(1, 2)
        v = self.value(x).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0,
            scale=d**-0.5, is_causal=False,
        )  # fmt: skip
        return out.transpose(1, 2).contiguous().reshape(*x.shape[:-1], -1).contiguous()


class _Output(nn.Module):
    """dense -> dropout -> LayerNorm(+ residual): after attention and after the FFN alike."""

    def __init__(self, d_in: int, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _Output(cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # BERT's "gelu": the exact (erf) form


class _Layer(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _Output(cfg.intermediate_size, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg: MiniLMConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class MiniLM(nn.Module):
    """A BERT encoder without pooler: token ids and their attention mask in, the last hidden
    states (B, L, hidden_size) out."""

    def __init__(self, config: MiniLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        mask = None
        if not bool(attention_mask.all()):  # padded: keys where the mask is 0 are ignored
            b, n = attention_mask.shape
            mask = attention_mask.bool()[:, None, None, :].expand(b, 1, n, n)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def load_minilm(folder: Path, layers: int | None = None) -> MiniLM:
    """The pretrained encoder in `folder` (config.json + model.safetensors, as the MiniLM
    package ships it), keeping its first `layers` layers (all if None), in eval mode. The
    checkpoint's pooler and any dropped layers are not read; torch's RNG is left as it was."""
    from safetensors import safe_open

    overrides = {} if layers is None else {"num_hidden_layers": layers}
    config = MiniLMConfig.from_file(folder / "config.json", **overrides)
    # The skeleton's random init is overwritten below; it must not move torch's RNG either (as
    # transformers' loader does not), so a seeded caller builds the same model after loading.
    with torch.random.fork_rng(devices=[]):
        model = MiniLM(config)
    wanted = model.state_dict().keys()
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        # A checkpoint saved from a BertModel inside another model may prefix its names.
        names = {k.removeprefix("bert."): k for k in f.keys()}
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise ValueError(f"{folder}: not a BERT encoder checkpoint, missing {missing[:5]}")
        model.load_state_dict({k: f.get_tensor(names[k]) for k in wanted})
    return model.eval()


class MiniLMTokenizer:
    """MiniLM's WordPiece tokenizer from its tokenizer.json (the same ids as transformers'
    AutoTokenizer gives for it), as the embedded VLA calls it: a batch of texts, each
    truncated to `max_length` tokens with [CLS] and [SEP] included, padded to the longest."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self._tok.no_padding()  # the file's own padding (fixed 128) is not what we call for
        self.pad_id = json.loads((Path(folder) / "config.json").read_text()).get(
            "pad_token_id", 0)  # fmt: skip

    def __call__(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """{"input_ids", "attention_mask"}: int64 (len(texts), longest) tensors."""
        if isinstance(texts, str):
            raise TypeError("MiniLMTokenizer takes a list of texts, not one string")
        if max_length < 2:
            raise ValueError(f"max_length {max_length} leaves no room for [CLS] and [SEP]")
        self._tok.enable_truncation(max_length)
        encodings = self._tok.encode_batch(list(texts))
        n = max((len(e.ids) for e in encodings), default=0)
        ids = torch.full((len(encodings), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encodings), n), dtype=torch.long)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
            mask[i, : len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}
