"""llast-translate: translate (or transcribe) audio files with a trained LLaST model.

    llast-translate a.wav b.flac --checkpoint ckpt/checkpoint_best.pt --src-lang fr --tgt-lang en
    llast-translate a.wav --checkpoint exported/ --src-lang fr --task asr

One line per file on stdout, in the order given; a progress line per batch on stderr. The model,
beam search and detokenizer are fairseq-generate's (``llast_fairseq.api.LlastTranslator``).
"""
import argparse
import sys
import time
from pathlib import Path

from ..api import LlastTranslator


def main(argv=None):
    parser = argparse.ArgumentParser(prog="llast-translate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="audio file (wav, flac, ogg, mp3) or archive.zip:offset:length entry")
    parser.add_argument("--checkpoint", required=True,
                        help="fairseq-train checkpoint, or a directory written by llast-export")
    parser.add_argument("--src-lang", required=True, help="language of the audio (e.g. fr)")
    parser.add_argument("--tgt-lang", help="language to translate into (e.g. en); not used with --task asr")
    parser.add_argument("--task", choices=["st", "asr"], default="st", help="translate (st) or transcribe (asr)")
    parser.add_argument("--beam", type=int, default=5, help="beam size")
    parser.add_argument("--max-len-b", type=int, default=256, help="most tokens to generate per file")
    parser.add_argument("--batch-size", type=int, default=8, help="files decoded together")
    parser.add_argument("--llm-path", help="base LLM directory, if not where the checkpoint's config says")
    parser.add_argument("--whisper-path", help="base Whisper weights, if not where the checkpoint's config says")
    parser.add_argument("--device", default="cpu", help="torch device to decode on (cpu, cuda, ...)")
    args = parser.parse_args(argv)
    if args.task == "st" and not args.tgt_lang:
        parser.error("--tgt-lang is required to translate (or pass --task asr to transcribe)")

    if Path(args.checkpoint).is_dir() and (args.llm_path or args.whisper_path):
        parser.error("--llm-path and --whisper-path are for checkpoints: an export holds its base models")
    start = time.time()

    def progress(done: int, total: int):
        print(f"llast-translate: {done}/{total} files ({time.time() - start:.1f} s)", file=sys.stderr, flush=True)

    try:
        if Path(args.checkpoint).is_dir():
            translator = LlastTranslator.from_exported(args.checkpoint, beam=args.beam, max_len_b=args.max_len_b,
                                                       device=args.device)
        else:
            translator = LlastTranslator.from_checkpoint(args.checkpoint, args.llm_path, args.whisper_path,
                                                         beam=args.beam, max_len_b=args.max_len_b,
                                                         device=args.device)
        texts = translator.translate(args.files, args.src_lang, args.tgt_lang or args.src_lang,
                                     args.batch_size, args.task, progress)
    except (FileNotFoundError, KeyError, ValueError) as e:
        parser.exit(1, f"llast-translate: error: {e.args[0] if isinstance(e, KeyError) else e}\n")
    for text in texts:
        print(" ".join(text.splitlines()))  # one line per file, whatever the model wrote
