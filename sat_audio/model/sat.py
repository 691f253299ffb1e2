"""SAT and plain audio transformers, parameter for parameter like upstream (RicherMans/SAT).

Blocks first, then the model. One class serves both kinds: a streaming model keeps a memory of
past chunks (every block's inputs), a plain ViT has none. Quirks of upstream that change scores are
kept on purpose and marked "upstream:" so the public checkpoints score as they were trained.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sat_audio import SAMPLE_RATE
from sat_audio.errors import SatAudioError
from sat_audio.model.frontend import LogMel
from sat_audio.model.registry import ModelSpec
from sat_audio.model.shapes import (
    BN_EPS,
    FREQ_ROWS,
    HEAD_LN_EPS,
    HOP,
    LN_EPS,
    N_CLASSES,
    N_MELS,
    PATCH,
    frames_for,
    short_piece_error,
)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, H, N, D / H)."""
    b, n, d = x.shape
    return x.reshape(b, n, n_heads, d // n_heads).transpose(1, 2)


class Attention(nn.Module):
    """Plain self-attention with a fused qkv projection (the ViT checkpoints)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (
            self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class StreamingAttention(nn.Module):
    """Queries from the chunk only; keys and values from the memory followed by the chunk."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        kv_in = x if memory is None else torch.cat((memory, x), dim=1)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        h = self.num_heads
        out = F.scaled_dot_product_attention(_heads(self.to_q(x), h), _heads(k, h), _heads(v, h))
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block; a streaming block also normalises its memory with norm1."""

    def __init__(self, dim: int, num_heads: int, streaming: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = (StreamingAttention if streaming else Attention)(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        if memory is not None:
            memory = self.norm1(memory)
        x = x + self.attn(self.norm1(x), memory)
        return x + self.mlp(self.norm2(x))


class _MelAsChannels(nn.Module):
    """(B, 1, mel, T) <-> (B, mel, 1, T), so BatchNorm2d normalises each mel band."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class AudioTransformer(nn.Module):
    """Waveform chunk (B, S) -> 527 AudioSet probabilities, with an optional memory.

    forward(wave, memory) returns (scores, new_memory). The memory is a tensor
    (depth, B, memory_tokens, D) for streaming models and None for plain ViTs.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        dim = spec.embed_dim
        with torch.device("cpu"):  # computed, never loaded: real even on the meta device
            self.front_end = LogMel()
        self.init_bn = nn.Sequential(
            _MelAsChannels(), nn.BatchNorm2d(N_MELS, eps=BN_EPS, momentum=0.01), _MelAsChannels()
        )
        self.patch_embed = PatchEmbed(dim)
        if spec.pooling == "token":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.token_pos_embed = nn.Parameter(torch.empty(1, dim))
        time_cols = (spec.target_frames + spec.memory_frames) // PATCH
        self.time_pos_embed = nn.Parameter(torch.empty(1, dim, 1, time_cols))
        self.freq_pos_embed = nn.Parameter(torch.empty(1, dim, FREQ_ROWS, 1))
        self.blocks = nn.ModuleList(
            Block(dim, spec.num_heads, spec.streaming) for _ in range(spec.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.outputlayer = nn.Sequential(
            nn.LayerNorm(dim, eps=HEAD_LN_EPS), nn.Linear(dim, N_CLASSES)
        )
        self.memory_tokens = FREQ_ROWS * (spec.memory_frames // PATCH)
        # in-place initialisers only: tensor arithmetic on the meta device (checkpoint.py builds
        # there) would import torch's Python meta kernels and sympy, about 75 MB.
        for name, param in self.named_parameters(recurse=False):
            if name != "cls_token":
                nn.init.trunc_normal_(param, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(
        self, wave: torch.Tensor, memory: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        scores, _, memory = self.forward_embed(wave, memory)
        return scores, memory

    def forward_embed(
        self, wave: torch.Tensor, memory: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """forward, with the chunk's embedding (B, D) from the same pass: the pooled tokens the
        head reads, before its LayerNorm (a chunk of several pieces: their mean)."""
        x = self.init_bn(self.front_end(wave).unsqueeze(1))
        if x.shape[-1] < PATCH:
            raise SatAudioError(short_piece_error(x.shape[-1]))
        if self.spec.streaming:
            return self._forward_stream(x, memory)
        scores, embedding = self._forward_vit(x)
        return scores, embedding, None

    def check_chunk(self, samples: int) -> None:
        """Raise before any audio arrives if chunks of this many samples cannot be scored."""
        frames = frames_for(samples)
        target = self.spec.target_frames
        longest = target if self.spec.streaming else target + PATCH - 1
        columns = (target if frames > longest else frames) // PATCH
        limit = self.time_pos_embed.shape[-1]
        if columns > limit:
            # only a plain ViT gets here: frames just above its target still run as one piece.
            below = math.floor(((limit + 1) * PATCH - 2) * HOP / SAMPLE_RATE * 100) / 100
            above = math.ceil(longest * HOP / SAMPLE_RATE * 100) / 100
            raise SatAudioError(
                f"{self.spec.name} cannot score {samples / SAMPLE_RATE:g} s chunks "
                f"({columns} patch columns, at most {limit} fit); use at most {below:g} s "
                f"or at least {above:g} s"
            )

    def silence_memory(self, batch: int = 1) -> torch.Tensor | None:
        """The memory after a memory-length of silence, where upstream inference starts."""
        if not self.spec.streaming:
            return None
        silence = torch.zeros(1, self.spec.memory_samples, device=self.time_pos_embed.device)
        _, memory = self.forward(silence)
        assert memory is not None
        return memory.expand(-1, batch, -1, -1).contiguous()

    def _forward_stream(
        self, x: torch.Tensor, memory: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        target = self.spec.target_frames
        if x.shape[-1] > target:
            # upstream: a chunk longer than the target runs as target-length pieces through the
            # memory, and a last piece shorter than the target is dropped.
            pieces = [p for p in x.split(target, dim=-1) if p.shape[-1] == target]
        else:
            pieces = [x]
        outs, embeddings = [], []
        for piece in pieces:
            tokens, memory = self._features(piece, memory)
            embeddings.append(self._pool(tokens))
            outs.append(self._head(embeddings[-1]))
        embedding = torch.stack(embeddings, dim=-1).mean(dim=-1)
        return torch.stack(outs, dim=-1).mean(dim=-1), embedding, memory

    def _forward_vit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.spec.target_frames
        if x.shape[-1] <= target + PATCH - 1:
            pooled = self._pool(self._features(x, None)[0])
            return self._head(pooled), pooled
        pieces = list(x.split(target, dim=-1))
        last = pieces.pop()
        if last.shape[-1] < target:
            pieces.append(F.pad(last, (0, target - last.shape[-1])))
        # upstream: when the input is an exact multiple of the target, its last piece is dropped.
        pooled = self._pool(self._features(torch.cat(pieces, dim=0), None)[0])
        scores = self._head(pooled).reshape(len(pieces), x.shape[0], -1).mean(dim=0)
        return scores, pooled.reshape(len(pieces), x.shape[0], -1).mean(dim=0)

    def _features(
        self, x: torch.Tensor, memory: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.patch_embed(x)
        b, d, f, t = x.shape
        if t > self.time_pos_embed.shape[-1]:
            raise SatAudioError(
                f"{self.spec.name} takes at most {self.time_pos_embed.shape[-1]} patch columns "
                f"per piece, the chunk gives {t}; use a shorter chunk"
            )
        x = x + self.time_pos_embed[..., :t]
        x = x + self.freq_pos_embed
        if memory is not None:
            # upstream: the layer-0 memory gets the last time positions and the frequency
            # positions added once more, and is kept that way in the next memory.
            first = memory[0].reshape(b, f, -1, d).permute(0, 3, 1, 2)
            first = first + self.time_pos_embed[..., -first.shape[-1] :] + self.freq_pos_embed
            first = first.permute(0, 2, 3, 1).reshape(1, b, -1, d)
            memory = torch.cat((first, memory[1:]), dim=0)
        x = x.flatten(2).transpose(1, 2)  # frequency-major tokens: b (f t) d
        if self.spec.pooling == "token":
            cls = self.cls_token.expand(b, -1, -1) + self.token_pos_embed
            x = torch.cat((cls, x), dim=1)
        inputs = []
        for i, block in enumerate(self.blocks):
            inputs.append(x)
            x = block(x, None if memory is None else memory[i])
        new_memory = None
        if self.spec.streaming:
            stacked = torch.stack(inputs)
            if memory is not None:
                stacked = torch.cat((memory, stacked), dim=2)
            new_memory = stacked[:, :, -self.memory_tokens :]
        return self.norm(x), new_memory

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] if self.spec.pooling == "token" else tokens.mean(dim=1)

    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.outputlayer(pooled))


def build_model(spec: ModelSpec) -> AudioTransformer:
    """A model of the variant's architecture in eval mode, weights not yet loaded."""
    return AudioTransformer(spec).eval()
