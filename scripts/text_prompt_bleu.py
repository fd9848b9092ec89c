#!/usr/bin/env python
"""How well an LLM translates *text* in LLaST's prompt (the source text where the audio goes).

LLaST assumes an LLM that already translates; this measures that for a local LLM directory
before speech training, with greedy decoding on a manifest's source texts:

    python scripts/text_prompt_bleu.py --llm /models/Llama-2-7b-chat-hf --data data/covost2 \\
        --subset dev_fr_en --rows 200
"""
import argparse
import sys
from pathlib import Path

import sacrebleu
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import bleu_settings, load_manifest  # noqa: E402

from llast_fairseq.data.prompts import PromptBuilder  # noqa: E402


def text_prompt_bleu(llm_dir: str, rows, max_new_tokens: int = 48):
    """(BLEU with the direction's sacrebleu settings, hypotheses) for ``rows`` of one direction."""
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
    settings = bleu_settings(rows[0]["tgt_lang"])
    return sacrebleu.corpus_bleu(hyps, [[r["tgt_text"] for r in rows]], **settings).score, hyps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", required=True, help="local HF causal-LM directory")
    parser.add_argument("--data", required=True, help="manifest root")
    parser.add_argument("--subset", required=True, help="one-direction manifest, e.g. dev_fr_en")
    parser.add_argument("--rows", type=int, default=40, help="first N rows")
    args = parser.parse_args()
    rows = load_manifest(args.data, args.subset)[: args.rows]
    bleu, hyps = text_prompt_bleu(args.llm, rows)
    for row, hyp in list(zip(rows, hyps))[:3]:
        print(f"{row['src_text']}\n  hyp: {hyp}\n  ref: {row['tgt_text']}")
    print(f"text-prompt BLEU on {len(rows)} rows of {args.subset}: {bleu:.2f}")


if __name__ == "__main__":
    main()
