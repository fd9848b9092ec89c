"""llast-text-prompt-bleu: how well a local LLM translates text in LLaST's prompt, before speech training.

    llast-text-prompt-bleu --llm /models/Llama-2-7b-chat-hf --data data/covost2 --subset dev_fr_en --rows 200

Greedy decoding of the first rows' src_text with the source text where the audio goes, scored
like llast-evaluate scores that direction.
"""
import argparse
import sys

from llast_fairseq.evaluation import EvalError, load_manifest
from llast_fairseq.text_prompt_bleu import text_prompt_bleu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", required=True, help="local Hugging Face causal-LM directory with its tokenizer")
    parser.add_argument("--data", required=True, help="directory of the <subset>.tsv manifests")
    parser.add_argument("--subset", required=True, help="manifest of one direction, e.g. dev_fr_en")
    parser.add_argument("--rows", type=int, default=40, help="score the first N rows")
    args = parser.parse_args(argv)
    try:
        rows = load_manifest(args.data, args.subset)[: args.rows]
        bleu, hyps = text_prompt_bleu(args.llm, rows)
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for row, hyp in list(zip(rows, hyps))[:3]:
        print(f"{row['src_text']}\n  hyp: {hyp}\n  ref: {row['tgt_text']}")
    print(f"text-prompt BLEU on {len(rows)} rows of {args.subset}: {bleu:.2f}")
    return 0
