"""``llast-prep-fleurs``: FLEURS into fairseq S2T manifests (:mod:`llast_fairseq.prep.fleurs`)."""
import argparse

from ..prep import fleurs
from .prep_options import HelpFormatter, add_prep_args, pair_type, run_prep


def get_parser():
    parser = argparse.ArgumentParser(prog="llast-prep-fleurs", description=fleurs.__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--fleurs-root", required=True,
                        help="FLEURS data directory holding <lang>/{train,dev,test}.tsv and "
                             "<lang>/audio/ (or the dataset repo holding data/)")
    parser.add_argument("--pairs", nargs="+", type=pair_type("-", "fr_fr-en_us"), required=True,
                        help="directions as <src>-<tgt> FLEURS codes, e.g. fr_fr-en_us en_us-de_de")
    add_prep_args(parser)
    return parser


def main(argv=None):
    run_prep(get_parser(), argv, lambda args, cfg: fleurs.prepare(args.fleurs_root, args.pairs, args.out_dir, cfg))
