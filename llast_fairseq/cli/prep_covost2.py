"""``llast-prep-covost2``: CoVoST 2 into fairseq S2T manifests (:mod:`llast_fairseq.prep.covost2`)."""
import argparse

from ..prep import covost2
from .prep_options import HelpFormatter, add_prep_args, pair_type, run_prep


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
    run_prep(get_parser(), argv, lambda args, cfg: covost2.prepare(args.cv_root, args.pairs, args.out_dir, args.covost_root, cfg))
