"""llast-export: a trained checkpoint as standalone weights, LoRA merged and without peft.

    llast-export --checkpoint ckpt/checkpoint_best.pt --out exported/ [--llm-path DIR]
                 [--whisper-path FILE] [--force]

writes exported/llm/ (Hugging Face LLM and tokenizer), exported/whisper.pt (openai-whisper
encoder) and exported/model.pt (fairseq checkpoint: the configs and the adaptor); see
llast_fairseq/export.py. Load it with ``llast_fairseq.api.LlastTranslator.from_exported(DIR)`` or
translate with ``llast-translate --checkpoint DIR``.
"""
import argparse

from ..export import export


def main(argv=None):
    parser = argparse.ArgumentParser(prog="llast-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="fairseq checkpoint of an llast model")
    parser.add_argument("--out", required=True, help="directory to write (must not exist unless --force)")
    parser.add_argument("--llm-path", help="base LLM directory, if not where the checkpoint's config says")
    parser.add_argument("--whisper-path", help="base Whisper weights, if not where the checkpoint's config says")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out, args.llm_path, args.whisper_path, args.force)
    except (FileExistsError, FileNotFoundError) as e:
        parser.exit(1, f"llast-export: error: {e}\n")
    print(f"exported {args.checkpoint} to {out}")
