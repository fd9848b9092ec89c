"""How well an LLM translates *text* in LLaST's prompt (the source text where the audio goes).

LLaST assumes an LLM that already translates; this measures that for a local LLM directory before
speech training: greedy decoding of a manifest's source texts, scored with the BLEU definition of
:mod:`llast_fairseq.evaluation` for each row's target language.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .data.prompts import PromptBuilder
from .evaluation import EvalError, score_translations


def text_prompt_bleu(llm_dir: str, rows: Sequence[Dict], max_new_tokens: int = 48) -> Tuple[float, List[str]]:
    """(BLEU, hypotheses) of the LLM's greedy translations of ``rows``' ``src_text`` (one direction)."""
    directions = {(r["src_lang"], r["tgt_lang"]) for r in rows}
    if len(directions) != 1:
        raise EvalError(f"the rows hold {len(directions)} directions {sorted(directions)}; "
                        "pass a manifest of one direction")
    tokenizer = AutoTokenizer.from_pretrained(llm_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(llm_dir, local_files_only=True).eval()
    prompts = PromptBuilder(tokenizer)
    hyps = []
    for row in rows:
        ids = prompts.ids_with_text("st", row["src_lang"], row["tgt_lang"], row["src_text"])
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        hyps.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip())
    (_, tgt_lang), = directions
    return score_translations(hyps, [r["tgt_text"] for r in rows], tgt_lang)["bleu"], hyps
