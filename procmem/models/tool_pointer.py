"""A tool-use network that reads its context by content and by offset from where it read
last, never by absolute position (``agent/network=tool_pointer``): on a context shifted or
padded with more ``EOS`` it does the same, so a longer expression is not a new kind of input.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from procmem.envs.toolenv_machine import CTX
from procmem.models.networks import ToolGRUPolicy, context_gru
from procmem.settings import AtLeast, Even, OneOf, configurable

ENCODERS = ("local", "gru")
DECODERS = ("gru", "feedforward")


class LocalEncoder(nn.Module):
    """Each token's embedding with its neighbours': ``layers`` residual 1-D convolutions of
    width ``2 * window + 1`` over the context, padded with ``pad_token`` on both sides, so a
    token's code depends on the ``layers * window`` tokens either side of it and on nothing
    else."""

    def __init__(self, token: nn.Embedding, hidden: int, window: int, layers: int,
                 pad_token: int) -> None:
        super().__init__()
        self.token, self.pad_token, self.window = token, pad_token, window
        self.convolutions = nn.ModuleList(
            nn.Conv1d(hidden, hidden, 2 * window + 1) for _ in range(layers))

    def forward(self, context: Tensor) -> Tensor:
        margin = self.window * len(self.convolutions)
        padded = nn.functional.pad(context, (margin, margin), value=self.pad_token)
        codes = self.token(padded).transpose(1, 2)  # [B, H, L + 2 margin]
        for convolution in self.convolutions:  # each trims its window from both ends
            codes = codes[:, :, self.window:-self.window] + nn.functional.gelu(
                convolution(codes))
        return codes.transpose(1, 2)  # [B, L, H]


class ContextGRU(nn.Module):
    """The attention network's encoder, a bidirectional GRU over the whole context (the
    ablation of :class:`LocalEncoder`: a token's code depends on every other token)."""

    def __init__(self, token: nn.Embedding, hidden: int) -> None:
        super().__init__()
        self.token = token
        self.gru = context_gru(hidden)

    def forward(self, context: Tensor) -> Tensor:
        return self.gru(self.token(context))[0]


@configurable
class ToolPointerPolicy(nn.Module):
    """Reads the context where it read last, or a few tokens on: a GRU decoder emits the
    tool tokens and at every step attends over the encoded context with scores of content
    (query against code) plus a learned bias for the offset from the previous read's centre,
    clipped to ``-reach..reach``; the first read's centre is the ``CTX`` token.

    - ``encoder=local`` (default): every token coded with its neighbours only
      (:class:`LocalEncoder`); ``encoder=gru`` codes it from the whole context.
    - ``relative=false`` drops the offset bias: content alone places every read (the
      ablation).
    - ``forward=true`` reads only at or after the previous read's centre: an expression's
      operators come in the program's order, so the read need never move back.
    - ``decoder=feedforward`` keeps no decoder state: each step's is a layer of the previous
      tool token and the previous read alone, so where the program is lies in the read's
      centre only, and a longer program than any trained passes through no new state.

    The (GRU) decoder starts from the ``CTX`` token's code; each step's input is the previous
    tool token's embedding and the previous read. The policy and value heads read the decoder state
    with the read. The recurrent state holds the decoder state, the read, the read's centre
    and the encoded context, flattened. With ``encoder=local`` and ``relative=true`` nothing
    depends on where in the context the problem sits or how much ``EOS`` follows it.
    """

    reads = ToolGRUPolicy.reads
    accepts = ToolGRUPolicy.accepts

    def __init__(
        self,
        env: Any,
        *,
        hidden: Annotated[int, AtLeast(2), Even()] = 128,
        encoder: Annotated[str, OneOf(ENCODERS)] = "local",
        window: Annotated[int, AtLeast(1)] = 2,
        layers: Annotated[int, AtLeast(1)] = 2,
        relative: bool = True,
        reach: Annotated[int, AtLeast(1)] = 8,
        forward: bool = False,
        decoder: Annotated[str, OneOf(DECODERS)] = "gru",
    ) -> None:
        super().__init__()
        self.token = nn.Embedding(env.vocab_size, hidden)
        self.encoder = (LocalEncoder(self.token, hidden, window, layers, env.pad_token)
                        if encoder == "local" else ContextGRU(self.token, hidden))
        self.recurrent = decoder == "gru"
        self.start = nn.Linear(hidden, hidden) if self.recurrent else None
        self.cell = nn.GRUCell(2 * hidden, hidden) if self.recurrent else nn.Linear(
            2 * hidden, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.offset_bias = nn.Linear(hidden, 2 * reach + 1) if relative else None
        self.combine = nn.Linear(2 * hidden, hidden)
        self.policy = nn.Linear(hidden, env.num_actions)
        self.value = nn.Linear(hidden, 1)
        self.hidden, self.reach, self.forward_only = hidden, reach, forward
        self.context_length = env.context_length
        self.pad_token = env.pad_token

    def initial_state(self, batch: int) -> Tensor:
        size = (2 + self.context_length) * self.hidden + 1
        return torch.zeros(batch, size, device=self.policy.weight.device)

    def forward(self, obs: dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        context, h = obs["context"], self.hidden
        keep = context != self.pad_token
        decoder, read, centre = state[:, :h], state[:, h: 2 * h], state[:, 2 * h]
        encoded = state[:, 2 * h + 1:].view(-1, self.context_length, h)
        starting = torch.nonzero(obs["step"] == 0).squeeze(1)
        if len(starting):  # encode the contexts of new episodes
            fresh = self.encoder(context[starting])
            start = (context[starting] == CTX).float().argmax(1)
            encoded = encoded.index_copy(0, starting, fresh)
            if self.recurrent:
                decoder = decoder.index_copy(0, starting, torch.tanh(self.start(
                    fresh[torch.arange(len(starting)), start])))
            read = read.index_copy(0, starting, torch.zeros_like(read[starting]))
            centre = centre.index_copy(0, starting, start.to(centre.dtype))
        step_input = torch.cat([self.token(obs["prev_token"]), read], dim=1)
        decoder = (self.cell(step_input, decoder) if self.recurrent
                   else torch.tanh(self.cell(step_input)))
        scores = torch.einsum("blh,bh->bl", encoded, self.query(decoder)) / math.sqrt(h)
        positions = torch.arange(self.context_length, device=context.device)
        if self.offset_bias is not None:
            offsets = (positions - centre.unsqueeze(1)).clamp(-self.reach, self.reach)
            bias = self.offset_bias(decoder)  # [B, 2 reach + 1]
            scores = scores + bias.gather(1, (offsets + self.reach).long())
        if self.forward_only:  # the centre lies among the tokens (contiguous): one is left
            keep = keep & (positions >= centre.unsqueeze(1))
        attention = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=1)
        read = torch.einsum("bl,blh->bh", attention, encoded)
        centre = (attention.detach() * positions).sum(1).round()
        features = torch.tanh(self.combine(torch.cat([decoder, read], dim=1)))
        state = torch.cat([decoder, read, centre.unsqueeze(1), encoded.flatten(1)], dim=1)
        return self.policy(features), self.value(features).squeeze(1), state
