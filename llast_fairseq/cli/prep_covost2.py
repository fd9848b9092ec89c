"""``llast-prep-covost2``: CoVoST 2 into fairseq S2T manifests (:mod:`llast_fairseq.prep.covost2`)."""
import argparse
import sys

from ..prep import covost2
from .prep_options import HelpFormatter, add_prep_args, pair_type, prep_config


def get_parser():
    parser = argparse.ArgumentParser(prog="llast-prep-covost2", description=covost2.__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--cv-root", required=True,
                        help="Common Voice release directory holding <src_lang>/validated.tsv "
                             "and <src_lang>/clips/")
    parser.add_argument("--covost-root",
                        help="directory holding covost_v2.<src>_<tgt>.tsv, if not --cv-root")
    parser.add_argument("--pairs", nargs="+", type=pair_type("_", "fr_en"), required=True,
                        help="directions as <src>_<tgt> like the CoVoST TSV names, e.g. fr_en en_de")
    add_prep_args(parser)
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    cfg = prep_config(parser, args)
    try:
        covost2.prepare(args.cv_root, args.pairs, args.out_dir, args.covost_root, cfg)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")

