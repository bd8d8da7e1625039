"""The UCE network, state-dict compatible with the official checkpoints, in one file.

Universal Cell Embeddings: Rosen et al., "Universal Cell Embeddings: A Foundation Model for
Cell Biology", bioRxiv 10.1101/2023.11.28.568918; reference code snap-stanford/UCE
(`model.py`, `evaluate.py`). The steps of `forward` follow docs/uce.md §6.

Two code paths share one set of weights:
- `reference`: the reference computation as written (sequence-first
  `nn.TransformerEncoder`, the float padding mask `1 - mask` that *adds* +1.0 to padded
  keys, the decoder over every position). Bit for bit the reference in float32.
- `fast`: a boolean padding mask (padded keys really are ignored, so a cell's embedding
  does not depend on its batch), `scaled_dot_product_attention`, and only the CLS
  position through the last layer and the decoder; bf16 autocast on GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uceindex.errors import ModelFilesError
from uceindex.model.numerics import DEFAULT_MODE, MODES


@dataclass(frozen=True)
class UCEConfig:
    token_dim: int = 5120  # width of a token row (ESM-2 15B: 5120)
    d_model: int = 1280
    nhead: int = 20  # cannot be read off a state dict
    d_hid: int = 5120  # feed-forward width
    nlayers: int = 4  # 4 or 33 in the official release
    output_dim: int = 1280  # cell embedding width
    max_len: int = 1536  # positional-encoding rows (pad_length)
    n_tokens: int = 145469  # rows of pe_embedding
    decoder_widths: tuple[int, ...] = (1024, 1280, 1280, 1280)
    binary_widths: tuple[int, ...] = (2048, 512, 128, 1)
    binary_in: int = 2560  # the reference hard-codes output_dim + 1280
    dropout: float = 0.05  # training only


# Published sizes, which a loaded checkpoint is compared with (nanoGPT's from_pretrained table).
PUBLISHED = {
    "4layer": UCEConfig(nlayers=4),
    "33layer": UCEConfig(nlayers=33),
}


def published_sizes(config: UCEConfig) -> str | None:
    """The published model whose sizes `config` has ("4layer", "33layer"), or None for a
    custom size (the tiny test models, a retrained network)."""
    return next((name for name, sizes in PUBLISHED.items() if sizes == config), None)


def full_block(in_features: int, out_features: int, p_drop: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, out_features),
        nn.LayerNorm(out_features),
        nn.GELU(),
        nn.Dropout(p_drop),
    )


def _head(in_features: int, widths: tuple[int, ...], p_drop: float) -> nn.Sequential:
    """full_block for every width but the last, then a plain Linear (the reference decoders)."""
    blocks, width = [], in_features
    for out in widths[:-1]:
        blocks.append(full_block(width, out, p_drop))
        width = out
    blocks.append(nn.Linear(width, widths[-1]))
    return nn.Sequential(*blocks)


def positional_encoding(max_len: int, d_model: int) -> Tensor:
    """Sinusoids, (max_len, 1, d_model): sin on even dims, cos on odd ones."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, 1, d_model)
    pe[:, 0, 0::2] = torch.sin(position * div_term)
    pe[:, 0, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", positional_encoding(max_len, d_model))


class UCE(nn.Module):
    """Parameter names match the reference `TransformerModel`, so official state dicts load strictly."""

    def __init__(self, config: UCEConfig):
        super().__init__()
        c = self.config = config
        self.pe_embedding = nn.Embedding(c.n_tokens, c.token_dim)
        self.pe_embedding.weight.requires_grad_(False)
        self.pos_encoder = PositionalEncoding(c.d_model, c.max_len)
        self.encoder = nn.Sequential(
            nn.Linear(c.token_dim, c.d_model), nn.GELU(), nn.LayerNorm(c.d_model)
        )
        layer = nn.TransformerEncoderLayer(c.d_model, c.nhead, c.d_hid, c.dropout)
        # Sequence-first layers never take the nested-tensor path; say so to silence the warning.
        self.transformer_encoder = nn.TransformerEncoder(
            layer, c.nlayers, enable_nested_tensor=False
        )
        self.decoder = _head(c.d_model, c.decoder_widths, c.dropout)
        # Pre-training head (is this gene expressed?); unused for embeddings, kept for strict loading.
        self.binary_decoder = _head(c.binary_in, c.binary_widths, c.dropout)
        self.gene_embedding_layer = nn.Sequential(
            nn.Linear(c.token_dim, c.d_model), nn.GELU(), nn.LayerNorm(c.d_model)
        )

    # -- loading ---------------------------------------------------------------------------

    @staticmethod
    def config_from_state_dict(state: dict[str, Tensor], nhead: int = 20) -> UCEConfig:
        """Every size but nhead is read off the tensor shapes."""
        try:
            nlayers = 1 + max(
                int(k.split(".")[2]) for k in state if k.startswith("transformer_encoder.layers.")
            )
            dec = [
                state[k].shape[0] for k in sorted(_linear_keys(state, "decoder"), key=_block_order)
            ]
            binary = [
                state[k].shape[0]
                for k in sorted(_linear_keys(state, "binary_decoder"), key=_block_order)
            ]
            config = UCEConfig(
                token_dim=state["encoder.0.weight"].shape[1],
                d_model=state["encoder.0.weight"].shape[0],
                nhead=nhead,
                d_hid=state["transformer_encoder.layers.0.linear1.weight"].shape[0],
                nlayers=nlayers,
                output_dim=dec[-1],
                max_len=state["pos_encoder.pe"].shape[0],
                n_tokens=state["pe_embedding.weight"].shape[0],
                decoder_widths=tuple(dec),
                binary_widths=tuple(binary),
                binary_in=state["binary_decoder.0.0.weight"].shape[1],
            )
        except (KeyError, ValueError, IndexError) as exc:
            raise ModelFilesError(
                f"the checkpoint is not a UCE state dict (missing {exc})"
            ) from None
        if config.d_model % nhead:
            raise ModelFilesError(f"d_model {config.d_model} is not divisible by nhead {nhead}")
        return config

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], nhead: int = 20) -> UCE:
        """Strict: the key sets must match and every shape must agree, or the first mismatch is named."""
        config = cls.config_from_state_dict(state, nhead)
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
            raise ModelFilesError(f"the checkpoint does not fit the UCE network: {what}")
        for key, tensor in expected.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise ModelFilesError(
                    f"the checkpoint does not fit the UCE network: {key} has shape "
                    f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
                )
        model.load_state_dict(state, strict=True, assign=True)
        model.pe_embedding.weight.requires_grad_(False)
        return model.eval()

    # -- forward ---------------------------------------------------------------------------

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Token ids (B, L) -> projected inputs (B, L, d_model), steps 1-2 of the spec."""
        x = F.normalize(self.pe_embedding(tokens), dim=-1)  # (B, L, token_dim)
        return self.encoder(x) * math.sqrt(self.config.d_model)  # (B, L, d_model)

    def forward(
        self,
        tokens: Tensor,
        lengths: Tensor,
        mode: str = DEFAULT_MODE,
        projected: Tensor | None = None,
    ) -> Tensor:
        """Cell sentences (B, L) int64 and their lengths (B,) -> unit cell embeddings (B, output_dim).

        `projected`, if given, is the token table already passed through steps 1-2 (rows,
        d_model): a gather then replaces the 5120-wide projection of every position.
        """
        B, L = tokens.shape
        x = projected[tokens] if projected is not None else self.embed_tokens(tokens)  # (B, L, D)
        x = x + self.pos_encoder.pe[:L, 0].to(x.dtype)  # step 3
        keep = (
            torch.arange(L, device=tokens.device)[None, :] < lengths[:, None]
        )  # (B, L) True = token
        if mode == "reference":
            cls_out = self._reference_encoder(x, keep)
        elif mode == "fast":
            cls_out = self._fast_encoder(x, keep)
        else:
            raise ValueError(f"mode must be one of {MODES}")
        return F.normalize(cls_out.float(), dim=1)  # step 6

    def _reference_encoder(self, x: Tensor, keep: Tensor) -> Tensor:
        """As the reference: seq-first, float mask (padded keys get +1.0), decoder everywhere."""
        mask = keep.to(x.dtype)
        out = self.transformer_encoder(
            x.permute(1, 0, 2), src_key_padding_mask=(1 - mask)
        )  # (L, B, D)
        return self.decoder(out)[0]  # (B, output_dim)

    def _fast_encoder(self, x: Tensor, keep: Tensor) -> Tensor:
        """Boolean mask; the last layer and the decoder only for the CLS position."""
        attn_mask = keep[:, None, None, :]  # (B, 1, 1, L), True = attend
        layers = self.transformer_encoder.layers
        for layer in layers[:-1]:
            x = layer.norm1(x + _attention(layer, x, x, attn_mask))
            x = layer.norm2(x + _feed_forward(layer, x))
        last = layers[-1]
        cls = x[:, :1]  # (B, 1, D)
        cls = last.norm1(cls + _attention(last, cls, x, attn_mask))
        cls = last.norm2(cls + _feed_forward(last, cls))
        return self.decoder(cls[:, 0])  # (B, output_dim)


def _attention(
    layer: nn.TransformerEncoderLayer, q_in: Tensor, kv_in: Tensor, attn_mask: Tensor
) -> Tensor:
    """Multi-head self-attention of `layer` for queries q_in (B, Lq, D) over kv_in (B, L, D)."""
    attn = layer.self_attn
    D, h = q_in.shape[-1], attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    B, Lq, L = q_in.shape[0], q_in.shape[1], kv_in.shape[1]
    q = F.linear(q_in, w_q, b_q).view(B, Lq, h, D // h).transpose(1, 2)  # (B, h, Lq, hs)
    k = F.linear(kv_in, w_k, b_k).view(B, L, h, D // h).transpose(1, 2)  # (B, h, L, hs)
    v = F.linear(kv_in, w_v, b_v).view(B, L, h, D // h).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, Lq, hs)
    return attn.out_proj(y.transpose(1, 2).reshape(B, Lq, D))


def _feed_forward(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    return layer.linear2(F.relu(layer.linear1(x)))


def _linear_keys(state: dict[str, Tensor], head: str) -> list[str]:
    """Weight keys of the Linear layers of a decoder head: `head.i.0.weight` or `head.i.weight`."""
    keys = []
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] != head or parts[-1] != "weight" or tensor.dim() != 2:
            continue
        if len(parts) == 3 or (len(parts) == 4 and parts[2] == "0"):
            keys.append(key)
    return keys


def _block_order(key: str) -> int:
    return int(key.split(".")[1])
