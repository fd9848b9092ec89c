"""Options shared by ``llast-prep-covost2`` and ``llast-prep-fleurs``."""
import argparse
import sys

from fairseq.dataclass.utils import gen_parser_from_dataclass

from ..prep.pipeline import PrepConfig


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and the default of each optional flag that has one."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return f"{action.help} (default: %(default)s)"


def pair_type(sep: str, example: str):
    """An argparse type turning ``"<src><sep><tgt>"`` into ``(src, tgt)``."""
    def parse(pair):
        src, found, tgt = pair.partition(sep)
        if not found or not src or not tgt:
            raise argparse.ArgumentTypeError(f"pair {pair!r} is not <src>{sep}<tgt>, e.g. {example}")
        return src, tgt
    return parse


def add_prep_args(parser: argparse.ArgumentParser):
    """``--out-dir`` and the flags of :class:`PrepConfig`."""
    parser.add_argument("--out-dir", required=True,
                        help="output directory for manifests, config.yaml, rejected.tsv and audio")
    gen_parser_from_dataclass(parser, PrepConfig())


def prep_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> PrepConfig:
    """The :class:`PrepConfig` of parsed ``args``; an invalid value is a usage error."""
    try:
        return PrepConfig(**{k: getattr(args, k) for k in PrepConfig.__dataclass_fields__
                             if not k.startswith("_")})
    except ValueError as e:
        parser.error(str(e))


def run_prep(parser: argparse.ArgumentParser, argv, prepare):
    """Parse ``argv`` and call ``prepare(args, cfg)``; a missing input file ends the command with
    its message."""
    args = parser.parse_args(argv)
    cfg = prep_config(parser, args)
    try:
        prepare(args, cfg)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
