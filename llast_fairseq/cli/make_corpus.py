"""llast-make-corpus: build the demo's offline spoken translation corpus (llast_fairseq.prep.corpus)."""
import argparse
import sys
from pathlib import Path

from ..prep.corpus import (DEFAULT_DIRECTIONS, PRESETS, SPLITS, CorpusConfig, CorpusError, build_corpus,
                           parse_directions)
from ..prep.grammar import LexiconError

# the demo's lexicon, in the repository this package is installed from (an editable install or a clone)
DEMO_LEXICON = Path(__file__).resolve().parents[2] / "examples" / "speech_translation_llm" / "corpus" / "lexicon.yaml"


def _directions(text):
    try:
        return parse_directions(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def get_parser():
    parser = argparse.ArgumentParser(
        prog="llast-make-corpus", description=__doc__,
        epilog="example: llast-make-corpus --out /tmp/corpus --preset tiny --directions fr-en,en-fr")
    parser.add_argument("--out", required=True, help="corpus directory")
    parser.add_argument("--lexicon", default=str(DEMO_LEXICON),
                        help="word tables of the grammar (default: the demo's lexicon.yaml)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the sentences, voices, speeds and pitches")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="per-direction sizes: " + ", ".join(
                            f"{name} {'/'.join(map(str, sizes))}" for name, sizes in PRESETS.items()))
    for split in SPLITS:
        parser.add_argument(f"--{split}-per-direction", type=_positive_int,
                            help=f"{split} utterances per direction (overrides --preset)")
    parser.add_argument("--directions", type=_directions, default=parse_directions(DEFAULT_DIRECTIONS),
                        help=f"comma-separated SRC-TGT pairs (default {DEFAULT_DIRECTIONS})")
    parser.add_argument("--workers", type=_positive_int, default=2, help="synthesis processes")
    return parser


def corpus_config(args) -> CorpusConfig:
    """The CorpusConfig of parsed arguments: the preset's sizes unless given one by one."""
    sizes = {f"{split}_per_direction": getattr(args, f"{split}_per_direction") or preset_size
             for split, preset_size in zip(SPLITS, PRESETS[args.preset])}
    return CorpusConfig(seed=args.seed, directions=args.directions, **sizes)


def main(argv=None):
    args = get_parser().parse_args(argv)
    if not Path(args.lexicon).is_file():
        sys.exit(f"error: lexicon {args.lexicon} not found: pass --lexicon PATH "
                 f"(the demo's is examples/speech_translation_llm/corpus/lexicon.yaml in the repository)")
    try:
        build_corpus(args.out, args.lexicon, corpus_config(args), args.workers)
    except (CorpusError, LexiconError) as e:
        sys.exit(f"error: {e}")
