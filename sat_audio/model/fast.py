"""The fast streaming path: the same scores as AudioTransformer.forward, less work per chunk.

A streaming block's memory is its inputs of the last chunks; its keys and values are
to_kv(norm1(memory)), so for every block but the first they are computed once, when the tokens
enter the memory, and kept. The first block's memory gets positional embeddings added again each
chunk (upstream's quirk), which changes its keys and values every time, so that block alone keeps
its inputs and recomputes them. The state of a batch is therefore one tensor per block:
    the first block's memory (B, M, D), as in AudioTransformer,
    then keys and values of every later block's memory (B, 2, heads, M, D / heads), the layout
    attention reads, so no step transposes the memory.
Other savings: q, k, v of the chunk in one matmul (on a weight that the model's to_q and to_kv
become views of, so no second copy), the patch convolution as one matmul, the BatchNorm and
positional sums folded into precomputed tensors, no nn.Module dispatch. The state after silence
comes from this path too, so a listener never touches the reference forward's kernels.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sat_audio.errors import SatAudioError
from sat_audio.memory import release_free_heap
from sat_audio.model.sat import FREQ_ROWS, PATCH, AudioTransformer, Block, StreamingAttention
from sat_audio.model.shapes import LN_EPS, State, short_piece_error


@torch.no_grad()
def _share_qkv(attn: StreamingAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """The q and kv projections as one weight (3D, D) and bias (3D,) for one matmul.

    to_q and to_kv become views of them, so the model keeps its attribute names and values (the
    ONNX exporter reads them) and the fused weight costs no memory of its own.
    """
    dim = attn.to_q.weight.shape[0]
    fused = []
    for name in ("weight", "bias"):
        both = torch.cat((getattr(attn.to_q, name), getattr(attn.to_kv, name)))
        setattr(attn.to_q, name, nn.Parameter(both[:dim]))
        setattr(attn.to_kv, name, nn.Parameter(both[dim:]))
        fused.append(both)
    return fused[0], fused[1]


class _FastBlock(nn.Module):
    """One block's weights, all shared with the model."""

    # The buffers registered below, typed for mypy (nn.Module's __getattr__ cannot say).
    n1_w: torch.Tensor
    n1_b: torch.Tensor
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    kv_w: torch.Tensor
    kv_b: torch.Tensor
    proj_w: torch.Tensor
    proj_b: torch.Tensor
    n2_w: torch.Tensor
    n2_b: torch.Tensor
    fc1_w: torch.Tensor
    fc1_b: torch.Tensor
    fc2_w: torch.Tensor
    fc2_b: torch.Tensor

    def __init__(self, block: Block) -> None:
        super().__init__()
        attn = block.attn
        assert isinstance(attn, StreamingAttention)
        self.num_heads = attn.num_heads
        qkv_w, qkv_b = _share_qkv(attn)
        tensors = {
            "n1_w": block.norm1.weight,
            "n1_b": block.norm1.bias,
            "qkv_w": qkv_w,
            "qkv_b": qkv_b,
            "kv_w": attn.to_kv.weight,
            "kv_b": attn.to_kv.bias,
            "proj_w": attn.proj.weight,
            "proj_b": attn.proj.bias,
            "n2_w": block.norm2.weight,
            "n2_b": block.norm2.bias,
            "fc1_w": block.mlp.fc1.weight,
            "fc1_b": block.mlp.fc1.bias,
            "fc2_w": block.mlp.fc2.weight,
            "fc2_b": block.mlp.fc2.bias,
        }
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor.detach(), persistent=False)

    def memory_kv(self, memory: torch.Tensor) -> torch.Tensor:
        """Keys and values of memory tokens, (B, 2, heads, M, D / heads)."""
        b, m, d = memory.shape
        h = self.num_heads
        kv = F.linear(
            F.layer_norm(memory, (d,), self.n1_w, self.n1_b, LN_EPS), self.kv_w, self.kv_b
        )
        return kv.reshape(b, m, 2, h, d // h).permute(0, 2, 3, 1, 4)

    def forward(
        self, x: torch.Tensor, kv_memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(chunk tokens (B * N, D), memory keys/values) -> (output, keys/values with the chunk).

        Tokens are rows of a matrix: every projection is one matmul with its bias.
        """
        b = kv_memory.shape[0]
        d = x.shape[-1]
        h = self.num_heads
        qkv = F.linear(F.layer_norm(x, (d,), self.n1_w, self.n1_b, LN_EPS), self.qkv_w, self.qkv_b)
        qkv = qkv.reshape(b, -1, 3, h, d // h).permute(0, 2, 3, 1, 4)  # (B, 3, heads, N, d/h)
        kv = torch.cat((kv_memory, qkv[:, 1:]), dim=3)
        out = F.scaled_dot_product_attention(qkv[:, 0], kv[:, 0], kv[:, 1])
        x = x + F.linear(out.transpose(1, 2).reshape(-1, d), self.proj_w, self.proj_b)
        hidden = F.gelu(
            F.linear(F.layer_norm(x, (d,), self.n2_w, self.n2_b, LN_EPS), self.fc1_w, self.fc1_b)
        )
        return x + F.linear(hidden, self.fc2_w, self.fc2_b), kv


class FastPiece(nn.Module):
    """One piece of log-mel through a streaming model with its memory as explicit tensors.

    forward(mel (B, 64, T), *state) -> (scores (B, 527), embedding (B, D), *state); T frames
    give T // 16 patch columns, at most the model's target. The embedding is the pooled tokens
    the head reads (AudioTransformer.forward_embed's), a by-product of the pass.
    model/onnx_export.py writes the same as ONNX. Build it after the weights are loaded: it keeps
    views of them, and makes each block's to_q and to_kv views of one fused q/kv weight.
    """

    # The buffers registered below (cls only with token pooling), typed for mypy.
    bn_scale: torch.Tensor
    bn_shift: torch.Tensor
    patch_w: torch.Tensor
    patch_b: torch.Tensor
    time_pos: torch.Tensor
    freq_pos: torch.Tensor
    memory_pos: torch.Tensor
    norm_w: torch.Tensor
    norm_b: torch.Tensor
    out_norm_w: torch.Tensor
    out_norm_b: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor
    cls: torch.Tensor

    @torch.no_grad()
    def __init__(self, model: AudioTransformer) -> None:
        super().__init__()
        spec = model.spec
        if not spec.streaming:
            raise SatAudioError(
                f"{spec.name} is a plain ViT; the fast path is for streaming models"
            )
        self.memory_tokens = model.memory_tokens
        self.token_pooling = spec.pooling == "token"
        bn, out_norm, out = model.init_bn[1], model.outputlayer[0], model.outputlayer[1]
        assert isinstance(bn, nn.BatchNorm2d) and bn.running_var is not None
        assert bn.running_mean is not None
        assert isinstance(out_norm, nn.LayerNorm) and isinstance(out, nn.Linear)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        dim = spec.embed_dim
        time_pos = model.time_pos_embed[0, :, 0].T  # (columns, D)
        freq_pos = model.freq_pos_embed[0, :, :, 0].T  # (rows, D)
        memory_columns = self.memory_tokens // FREQ_ROWS
        memory_pos = (freq_pos[:, None] + time_pos[None, -memory_columns:]).reshape(-1, dim)
        tensors = {
            "bn_scale": scale[:, None],
            "bn_shift": (bn.bias - bn.running_mean * scale)[:, None],
            "patch_w": model.patch_embed.proj.weight.reshape(dim, PATCH * PATCH),
            "patch_b": model.patch_embed.proj.bias,
            "time_pos": time_pos,
            "freq_pos": freq_pos,
            "memory_pos": memory_pos,
            "norm_w": model.norm.weight,
            "norm_b": model.norm.bias,
            "out_norm_w": out_norm.weight,
            "out_norm_b": out_norm.bias,
            "out_w": out.weight,
            "out_b": out.bias,
        }
        if self.token_pooling:
            tensors["cls"] = (model.cls_token[0] + model.token_pos_embed).detach()
        for name, tensor in tensors.items():
            assert tensor is not None  # every layer here has its bias
            self.register_buffer(name, tensor.detach(), persistent=False)
        self.out_norm_eps = out_norm.eps
        blocks = [_FastBlock(cast(Block, block)) for block in model.blocks]
        self.blocks = nn.ModuleList(blocks)  # registered as submodules
        self.fast_blocks = tuple(blocks)  # the same blocks, typed

    def state_from_memory(self, memory: torch.Tensor) -> State:
        """The fast state of an AudioTransformer memory (depth, B, M, D)."""
        kv = [block.memory_kv(memory[i]) for i, block in enumerate(self.fast_blocks) if i > 0]
        return (memory[0], *kv)

    def empty_state(self) -> State:
        """A state of no memory tokens: forward then runs like AudioTransformer without memory."""
        dim = self.patch_b.shape[0]
        heads = self.fast_blocks[0].num_heads
        kv = torch.zeros(1, 2, heads, 0, dim // heads)
        return (torch.zeros(1, 0, dim), *(kv for _ in self.fast_blocks[1:]))

    def forward(self, mel: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = mel.shape[0]
        columns = mel.shape[-1] // PATCH
        dim = self.patch_b.shape[0]
        x = mel[..., : columns * PATCH] * self.bn_scale + self.bn_shift
        patches = (
            x.reshape(b, FREQ_ROWS, PATCH, columns, PATCH)
            .permute(0, 1, 3, 2, 4)
            .reshape(b, FREQ_ROWS * columns, PATCH * PATCH)
        )
        pos = (self.freq_pos[:, None] + self.time_pos[None, :columns]).reshape(-1, dim)
        x = F.linear(patches, self.patch_w, self.patch_b) + pos
        if self.token_pooling:
            x = torch.cat((self.cls.expand(b, -1, -1), x), dim=1)
        # upstream: the first block's memory gets its positions added once more, every chunk.
        first = state[0] + self.memory_pos[self.memory_tokens - state[0].shape[1] :]
        new_state = [torch.cat((first, x), dim=1)[:, -self.memory_tokens :]]
        kv = (self.fast_blocks[0].memory_kv(first), *state[1:])
        tokens = x.shape[1]
        x = x.reshape(-1, dim)
        for i, (block, kv_memory) in enumerate(zip(self.fast_blocks, kv, strict=True)):
            x, kv_all = block(x, kv_memory)
            if i > 0:  # the first block's keys and values are recomputed, see above
                new_state.append(kv_all[:, :, :, -self.memory_tokens :])
        x = F.layer_norm(x, (dim,), self.norm_w, self.norm_b, LN_EPS).reshape(b, tokens, dim)
        embedding = x[:, 0] if self.token_pooling else x.mean(dim=1)
        pooled = F.layer_norm(
            embedding, (dim,), self.out_norm_w, self.out_norm_b, self.out_norm_eps
        )
        scores = torch.sigmoid(F.linear(pooled, self.out_w, self.out_b))
        return (scores, embedding, *new_state)


class TorchScorer:
    """Scores chunks of a torch model for the engine; fast=False runs the plain forward.

    threads: torch's thread count inside inference() (0: leave torch's own); torch keeps it per
    process, so it is set only there and put back after, and the model's load changes nothing
    for the rest of the process.
    """

    def __init__(self, model: AudioTransformer, fast: bool = True, threads: int = 0) -> None:
        self.model = model
        self.spec = model.spec
        self.threads = threads
        self.fast = fast and model.spec.streaming
        self._piece = FastPiece(model) if self.fast else None
        self._silence = self._silence_state() if self._piece is not None else ()
        release_free_heap()  # the separate q/kv weights and the silence pass's buffers

    def check_chunk(self, samples: int) -> None:
        self.model.check_chunk(samples)

    def initial_state(self, batch: int) -> State:
        """The state after a memory-length of silence; () for a plain ViT."""
        with torch.inference_mode():
            if self._piece is not None:
                return tuple(part.repeat(batch, *[1] * (part.dim() - 1)) for part in self._silence)
            memory = self.model.silence_memory(batch)
            return () if memory is None else tuple(memory)

    def _silence_state(self) -> State:
        """What AudioTransformer.silence_memory gives, through the fast path from no memory."""
        assert self._piece is not None
        silence = np.zeros((1, self.spec.memory_samples), np.float32)
        with self.inference():
            return self.score(silence, self._piece.empty_state())[1]

    def score(self, chunks: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """(B, S) float32 samples and the batch's state -> (B, 527) scores, new state."""
        scores, _, state = self.score_embed(chunks, state)
        return scores, state

    def score_embed(self, chunks: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        """score, with each chunk's embedding (B, D) from the same pass."""
        with torch.inference_mode():
            wave = torch.from_numpy(chunks)
            if self._piece is None:
                memory = torch.stack(state) if state else None
                scores, embedding, memory = self.model.forward_embed(wave, memory)
                return scores.numpy(), embedding.numpy(), () if memory is None else tuple(memory)
            mel = self.model.front_end(wave)
            target = self.spec.target_frames
            if mel.shape[-1] < PATCH:
                raise SatAudioError(short_piece_error(mel.shape[-1]))
            pieces = mel.split(target, dim=-1) if mel.shape[-1] > target else (mel,)
            outs, embeddings = [], []
            for piece in pieces:
                if piece.shape[-1] < target and len(pieces) > 1:
                    continue  # upstream: a short last piece of a long chunk is dropped
                scores, embedding, *state = self._piece(piece, *state)
                outs.append(scores)
                embeddings.append(embedding)
            if len(outs) == 1:
                return outs[0].numpy(), embeddings[0].numpy(), tuple(state)
            mean_scores = torch.stack(outs, dim=-1).mean(dim=-1)
            return mean_scores.numpy(), torch.stack(embeddings, -1).mean(-1).numpy(), tuple(state)

    @contextmanager
    def inference(self) -> Iterator[None]:
        """The engine scores and writes states inside this (they are inference tensors), on the
        configured threads; torch's thread count is the caller's again after."""
        before = torch.get_num_threads()
        change = bool(self.threads) and self.threads != before
        if change:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            if change:
                torch.set_num_threads(before)
