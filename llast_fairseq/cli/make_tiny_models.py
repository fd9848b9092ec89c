"""llast-make-tiny-models: a random-init Whisper and Llama (with its tokenizer) in the real formats."""
import argparse
import os

from ..tiny_models import make_tiny_llm, make_tiny_whisper


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text", required=True, help="text file to train the tokenizer on, one sentence a line")
    parser.add_argument("--out", required=True, help="output directory (whisper.pt and llm/ are written there)")
    parser.add_argument("--vocab-size", type=int, default=1000, help="SentencePiece vocabulary size")
    parser.add_argument("--hidden", type=int, default=256, help="LLM hidden size")
    parser.add_argument("--layers", type=int, default=4, help="LLM layers")
    parser.add_argument("--heads", type=int, default=4, help="LLM attention heads")
    parser.add_argument("--init-std", type=float, default=0.2, help="LLM weight init std (see make_tiny_llm)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parser.parse_args(argv)
    with open(args.text, encoding="utf-8") as f:
        texts = [line.strip() for line in f if line.strip()]
    os.makedirs(args.out, exist_ok=True)
    make_tiny_whisper(os.path.join(args.out, "whisper.pt"), seed=args.seed)
    make_tiny_llm(os.path.join(args.out, "llm"), texts, args.vocab_size, args.hidden, args.layers,
                  args.heads, args.seed, args.init_std)
    print(f"wrote {args.out}/whisper.pt and {args.out}/llm")
