"""The LLaST decoder: a Hugging Face causal LM whose input starts with prompt + audio.

Every row's prefix is ``[prompt_before | audio | prompt_after]`` with its padding moved to the left,
so all prefixes end in the last column and the logits there predict the first target token.
Positions count only real tokens (``cumsum(mask) - 1``). Training ignores ``prev_output_tokens[:, 0]``
(fairseq's leading EOS), so the logits of the last prefix column and of y_1..y_{n-1} line up with the
target ``y_1..y_n``; prompt and audio positions never reach the loss.

With ``autocast_bf16`` the LLM runs under ``torch.autocast`` in bfloat16 (matrix products in
bfloat16; weights, gradients and fairseq's log-softmax and loss stay float32), where bfloat16 is
faster than float32 (:mod:`.autocast`).

In incremental decoding the LLM's KV cache lives in fairseq's incremental state: the first step
runs the whole prefix once per sentence and expands the cache to the sentence's beams (the encoder
output's ``rows`` say which sentence each beam reads), later steps run one token each, and beam
moves reorder the cache rows.
"""
from typing import Dict, List, Optional

import torch
from fairseq.models import FairseqIncrementalDecoder
from torch import Tensor
from transformers import DynamicCache

from .autocast import bf16_autocast


class LlastDecoder(FairseqIncrementalDecoder):
    def __init__(self, dictionary, llm, autocast_bf16: bool = False):
        super().__init__(dictionary)
        self.llm = llm
        self.embed = llm.get_input_embeddings()
        self.autocast_bf16 = autocast_bf16

    def prefix(self, encoder_out: Dict[str, List[Tensor]]):
        """Prefix embeddings ``[B, P, H]``, validity mask ``[B, P]`` and positions ``[B, P]`` of
        the encoder's own rows (before any beam expansion)."""
        parts = [
            (self.embed(encoder_out["prompt_before"][0]), encoder_out["prompt_before_padding_mask"][0]),
            (encoder_out["audio_out"][0], encoder_out["audio_padding_mask"][0]),
            (self.embed(encoder_out["prompt_after"][0]), encoder_out["prompt_after_padding_mask"][0]),
        ]
        embeds = torch.cat([e.to(self.embed.weight.dtype) for e, _ in parts], dim=1)
        valid = torch.cat([~m for _, m in parts], dim=1)
        # a stable sort puts each row's padding first and keeps its real positions in order
        order = torch.sort(valid.int(), dim=1, stable=True).indices
        valid = valid.gather(1, order)
        embeds = embeds.gather(1, order[:, :, None].expand_as(embeds))
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        return embeds, valid, positions

    def forward(self, prev_output_tokens: Tensor, encoder_out: Dict[str, List[Tensor]],
                incremental_state: Optional[Dict] = None, **kwargs):
        """Logits ``[B, T, V]`` for the T target positions (T = ``prev_output_tokens.size(1)``); in
        incremental decoding ``[B, 1, V]`` for the next token."""
        with bf16_autocast(prev_output_tokens.device.type, self.autocast_bf16):
            if incremental_state is not None:
                return self.forward_incremental(prev_output_tokens, encoder_out, incremental_state)
            return self.forward_full(prev_output_tokens, encoder_out)

    def forward_full(self, prev_output_tokens: Tensor, encoder_out: Dict[str, List[Tensor]]):
        embeds, valid, positions = self.prefix(encoder_out)
        if "rows" in encoder_out:
            rows = encoder_out["rows"][0]
            embeds, valid, positions = embeds[rows], valid[rows], positions[rows]
        tokens = prev_output_tokens[:, 1:]
        steps = tokens.size(1)
        out = self.llm(
            inputs_embeds=torch.cat([embeds, self.embed(tokens)], dim=1),
            attention_mask=torch.cat([valid, tokens.ne(self.dictionary.pad())], dim=1).long(),
            position_ids=torch.cat(
                [positions, valid.sum(1, keepdim=True) + torch.arange(steps, device=tokens.device)],
                dim=1,
            ),
            use_cache=False,
            logits_to_keep=steps + 1,
        )
        return out.logits, {"attn": None}

    def forward_incremental(self, prev_output_tokens: Tensor, encoder_out, incremental_state):
        state = self.get_incremental_state(incremental_state, "llm")
        if state is None:
            return self.forward_prefix(encoder_out, incremental_state)
        mask = torch.cat([state["mask"], state["mask"].new_ones(len(state["mask"]), 1)], dim=1)
        out = self.llm(
            inputs_embeds=self.embed(prev_output_tokens[:, -1:]), attention_mask=mask.long(),
            position_ids=state["next_position"], cache=state["cache"], use_cache=True, logits_to_keep=1,
        )
        self.set_incremental_state(
            incremental_state, "llm",
            {"cache": out.cache, "mask": mask, "next_position": state["next_position"] + 1},
        )
        return out.logits, {"attn": None}

    def forward_prefix(self, encoder_out, incremental_state):
        """The first step: the prefix of each sentence once, its KV cache then copied to the rows
        (beams) that read it; logits ``[N, 1, V]`` for the N output rows."""
        embeds, mask, positions = self.prefix(encoder_out)
        rows = encoder_out.get("rows", [torch.arange(len(embeds), device=embeds.device)])[0]
        sentences, expand = torch.unique(rows, return_inverse=True)
        mask, positions = mask[sentences], positions[sentences]
        out = self.llm(
            inputs_embeds=embeds[sentences], attention_mask=mask.long(), position_ids=positions,
            cache=DynamicCache(), use_cache=True, logits_to_keep=1,
        )
        cache = out.cache
        cache.reorder_cache(expand)
        mask = mask[expand]
        self.set_incremental_state(
            incremental_state, "llm",
            {"cache": cache, "mask": mask, "next_position": mask.sum(1, keepdim=True)},
        )
        return out.logits[expand], {"attn": None}

    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        state = self.get_incremental_state(incremental_state, "llm")
        if state is None:
            return
        state["cache"].reorder_cache(new_order)
        state["mask"] = state["mask"].index_select(0, new_order)
        state["next_position"] = state["next_position"].index_select(0, new_order)
        self.set_incremental_state(incremental_state, "llm", state)

    def max_positions(self):
        return self.llm.config.max_position_embeddings
