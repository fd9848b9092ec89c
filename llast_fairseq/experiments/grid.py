"""An experiment grid read from YAML: a base recipe, named variants of it, and seeds.

Every (variant, seed) is a cell: one fairseq-train run and its fairseq-generate runs, whose
exact commands :meth:`Grid.cells` builds. The file::

    recipe: covost2_recipe.yaml   # the mapping below, or a YAML file holding it (relative to this file)
    variants:                     # name -> overrides of the recipe's flags
      paper: {cascade: true}      # also decode the translation tests through the cascade
      r8: {train: {llm-lora-r: 8, llm-lora-alpha: 4}, seeds: [1]}   # its own seeds
    seeds: [1, 2, 3]              # every variant's, unless it names its own
    baseline: paper               # the variant the others are tested against (default: the first)

    # a recipe:
    data: $DATA                   # manifest directory fairseq-train reads
    task: {user-dir: llast_fairseq, task: llast_st, llm-path: $LLM}   # flags both CLIs get
    train: {arch: llast, asr-augment: true, ...}                      # fairseq-train flags
    generate: {beam: 5, max-len-b: 256, batch-size: 16}               # fairseq-generate flags
    checkpoint: checkpoint_best.pt
    tests:                        # name -> test set, each decoded by one fairseq-generate
      covost2: {subset: "test_fr_en,test_de_en"}
      covost2-asr: {subset: test_fr_en, asr: true}
      fleurs: {subset: test_fr_fr-en_us, data: $FLEURS}

Flags are written as fairseq spells them, without the leading ``--``: ``true`` gives the bare
flag, ``false`` or ``null`` leaves it out (how a variant drops a recipe's flag), other values are
passed as their text. ``$NAME`` and ``${NAME}`` in text are environment variables. The runner
sets the flags that differ per cell (:data:`RUNNER_FLAGS`). Paths are as the commands see them:
relative ones are relative to the directory llast-experiment runs in.
"""
import dataclasses
import os
import re
import shlex
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Union

import yaml

Flags = Dict[str, Union[str, int, float, bool, None]]
# set by the runner for each cell; the YAML may not set them
RUNNER_FLAGS = {
    "train": ("seed", "save-dir", "log-format"),
    "generate": ("path", "gen-subset", "results-path", "eval-task"),
}
# fairseq-generate flags that the cascade (llast-experiment cascade) decodes with too; a cascade
# variant may also hold flags that only say how fairseq-generate scores or logs; any other flag
# would make its two decodings differ, so it is an error there
CASCADE_FLAGS = ("beam", "max-len-a", "max-len-b", "min-len", "lenpen", "batch-size", "cpu")
SCORING_FLAGS = ("scoring", "sacrebleu-lowercase", "sacrebleu-tokenizer", "sacrebleu-char-level",
                 "num-workers", "log-format", "log-interval")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # variant and test names are directory names
FLAG = re.compile(r"^[a-z][a-z0-9-]*$")
ENV_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class GridError(Exception):
    """A grid file, or a cell directory, that cannot be run as it is; the message says where."""


@dataclass
class TestSet:
    subset: str = field(metadata={"help": "--gen-subset: a manifest name, or several joined by commas"})
    data: str = field(default="", metadata={"help": "manifest directory (default: the recipe's data)"})
    asr: bool = field(default=False, metadata={"help": "decode transcripts (--eval-task asr), scored with WER"})


@dataclass
class Recipe:
    data: str = field(metadata={"help": "manifest directory: fairseq-train's DATA"})
    tests: Dict[str, TestSet] = field(metadata={"help": "test sets by name, each one fairseq-generate run"})
    task: Flags = field(default_factory=dict, metadata={"help": "flags given to both fairseq-train and fairseq-generate"})
    train: Flags = field(default_factory=dict, metadata={"help": "fairseq-train flags"})
    generate: Flags = field(default_factory=dict, metadata={"help": "fairseq-generate flags"})
    checkpoint: str = field(default="checkpoint_best.pt", metadata={"help": "checkpoint file the tests decode"})


@dataclass
class Variant:
    task: Flags = field(default_factory=dict, metadata={"help": "task flags over the recipe's"})
    train: Flags = field(default_factory=dict, metadata={"help": "fairseq-train flags over the recipe's"})
    generate: Flags = field(default_factory=dict, metadata={"help": "fairseq-generate flags over the recipe's"})
    cascade: bool = field(default=False, metadata={
        "help": "also decode the translation tests through LlastTranslator.cascade (transcribe, then translate)"})
    seeds: List[int] = field(default_factory=list, metadata={"help": "this variant's seeds (default: the grid's)"})


@dataclass
class Cell:
    """One (variant, seed): its directory and its steps ``[(name, argv)]`` in order; every step
    logs to ``<name>.log`` and is marked done by ``<name>.done`` in the directory."""
    variant: str
    seed: int
    dir: Path
    steps: List[tuple]
    tests: Dict[str, TestSet]
    cascade: bool

    @property
    def name(self) -> str:
        return f"{self.variant} seed {self.seed}"

    def script(self) -> str:
        """command.sh: the steps' commands, shell-quoted, in the order they run."""
        lines = ["#!/bin/sh", f"# llast-experiment cell: variant {self.variant}, seed {self.seed}; run from the "
                 "directory llast-experiment ran in; each step logs to <step>.log in this directory", "set -e"]
        return "\n".join(lines + [shlex.join(argv) for _, argv in self.steps]) + "\n"


@dataclass
class Grid:
    recipe: Recipe = field(metadata={"help": "the base recipe, or a YAML file holding it (relative to the grid file)"})
    variants: Dict[str, Variant] = field(metadata={"help": "variant name -> its overrides of the recipe"})
    seeds: List[int] = field(metadata={"help": "training seeds of every variant that names none"})
    baseline: str = field(default="", metadata={"help": "variant the others are tested against (default: the first)"})

    def cells(self, out_dir) -> List[Cell]:
        """Every (variant, seed) cell under ``out_dir``, variant-major in file order."""
        return [self.cell(out_dir, v, s) for v in self.variants for s in self.seeds_of(v)]

    def seeds_of(self, variant: str) -> List[int]:
        return self.variants[variant].seeds or self.seeds

    def cell(self, out_dir, variant: str, seed: int) -> Cell:
        r, v = self.recipe, self.variants[variant]
        d = Path(out_dir) / variant / f"seed{seed}"
        task = {**r.task, **v.task}
        train = {**r.train, **v.train}
        generate = {**r.generate, **v.generate}
        steps = [("train", ["fairseq-train", r.data, *flag_words(task), *flag_words(train),
                            "--seed", str(seed), "--save-dir", str(d / "checkpoints"), "--log-format", "json"])]
        checkpoint = str(d / "checkpoints" / r.checkpoint)
        tests = {name: dataclasses.replace(t, data=t.data or r.data) for name, t in r.tests.items()}
        for name, test in tests.items():
            steps.append((f"generate-{name}", [
                "fairseq-generate", test.data, *flag_words(task), *flag_words(generate),
                "--path", checkpoint, "--gen-subset", test.subset, "--results-path", str(d / name),
                *(["--eval-task", "asr"] if test.asr else [])]))
        if v.cascade:
            decoding = {k: generate[k] for k in CASCADE_FLAGS if k in generate}
            for name, test in tests.items():
                if not test.asr:
                    steps.append((f"cascade-{name}", [
                        "llast-experiment", "cascade", test.data, "--subset", test.subset,
                        "--checkpoint", checkpoint, "--out", str(d / f"{name}-cascade"),
                        *flag_words({"llm-path": task.get("llm-path")}), *flag_words(decoding)]))
        return Cell(variant, seed, d, steps, tests, v.cascade)

    @property
    def baseline_variant(self) -> str:
        return self.baseline or next(iter(self.variants))


def flag_words(flags: Flags) -> List[str]:
    """``{"asr-augment": True, "lr": 2e-4, "x": False}`` -> ``["--asr-augment", "--lr", "0.0002"]``."""
    words = []
    for name, value in flags.items():
        if value is True:
            words.append(f"--{name}")
        elif value is not False and value is not None:
            words += [f"--{name}", str(value)]
    return words


# ----------------------------------------------------------------------------- loading

def load_grid(path) -> Grid:
    """Read and check a grid file; every problem is a :class:`GridError` naming the file and key."""
    path = Path(path)
    data = _read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("recipe"), str):
        recipe_path = path.parent / expand(data["recipe"], f"{path}: recipe")
        data = {**data, "recipe": _read_yaml(recipe_path)}
        where = f"{path} (recipe from {recipe_path})"
    else:
        where = str(path)
    grid = _build(Grid, data, where, "")
    _check(grid, where)
    return grid


def _read_yaml(path: Path):
    if not path.is_file():
        raise GridError(f"grid file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise GridError(f"{path}: not valid YAML: {e}") from None


def expand(text: str, where: str) -> str:
    """``text`` with ``$NAME`` / ``${NAME}`` replaced by the environment's values."""
    def value(match):
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise GridError(f"{where}: environment variable ${name} is not set; export {name}=... first")
        return os.environ[name]
    return ENV_VAR.sub(value, text)


def _build(cls, value, file: str, key: str):
    """A dataclass from a YAML mapping: unknown or missing keys and wrong types are errors."""
    where = f"{file}: {key or 'top level'}"
    if not isinstance(value, dict):
        raise GridError(f"{where}: expected a mapping with keys {[f.name for f in dataclasses.fields(cls)]}, "
                        f"got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise GridError(f"{where}: unknown key {unknown[0]!r}; the keys are {list(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}" if key else name
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], file, sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise GridError(f"{file}: {sub}: missing ({f.metadata['help']})")
    return cls(**kwargs)


def _convert(tp, value, file: str, key: str):
    where = f"{file}: {key}"
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, file, key)
    if tp == Flags:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise GridError(f"{where}: expected a mapping of flags (e.g. {{llm-lora-r: 8}}), got {value!r}")
        flags = {}
        for name, v in value.items():
            if not isinstance(name, str) or not FLAG.match(name):
                raise GridError(f"{where}: flag {name!r}: write flags as fairseq spells them, without the "
                                "leading --, e.g. llm-lora-r")
            if isinstance(v, (dict, list)):
                raise GridError(f"{where}.{name}: a flag's value is text, a number, true or false; quote "
                                f"JSON values such as eval-bleu-args as text, got {v!r}")
            flags[name] = expand(v, f"{where}.{name}") if isinstance(v, str) else v
        return flags
    origin = typing.get_origin(tp)
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise GridError(f"{where}: expected a non-empty mapping of names, got {value!r}")
        for name in value:
            if not isinstance(name, str) or not NAME.match(name):
                raise GridError(f"{where}: name {name!r}: use letters, digits and . _ + - (it names a directory)")
        item = typing.get_args(tp)[1]
        return {name: _convert(item, v if v is not None else {}, file, f"{key}.{name}") for name, v in value.items()}
    if origin is list:
        if not isinstance(value, list) or not value:
            raise GridError(f"{where}: expected a non-empty list, got {value!r}")
        return [_convert(typing.get_args(tp)[0], v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise GridError(f"{where}: expected a whole number, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise GridError(f"{where}: expected true or false, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise GridError(f"{where}: expected text, got {value!r}")
        return expand(value, where)
    return value


def _check(grid: Grid, where: str):
    """What the types cannot say: runner-owned flags, seeds, the baseline, cascade flags."""
    sections = [("recipe", grid.recipe)] + [(f"variants.{n}", v) for n, v in grid.variants.items()]
    for prefix, part in sections:
        for section in ("task", "train", "generate"):
            owned = {"task": RUNNER_FLAGS["train"] + RUNNER_FLAGS["generate"], **RUNNER_FLAGS}[section]
            for name in getattr(part, section):
                if name in owned:
                    raise GridError(f"{where}: {prefix}.{section}.{name}: the runner sets --{name} for each "
                                    "cell (see llast_fairseq/experiments/grid.py); remove it")
    for key, seeds in [("seeds", grid.seeds)] + [(f"variants.{n}.seeds", v.seeds) for n, v in grid.variants.items()]:
        if len(set(seeds)) != len(seeds):
            raise GridError(f"{where}: {key}: {seeds} repeats a seed")
    for name in grid.recipe.tests:
        if name.endswith("-cascade"):
            raise GridError(f"{where}: recipe.tests.{name}: names ending in -cascade are the cascade's "
                            "output directories; rename the test")
    if grid.baseline and grid.baseline not in grid.variants:
        raise GridError(f"{where}: baseline: {grid.baseline!r} is not one of the variants {list(grid.variants)}")
    for name, v in grid.variants.items():
        if not v.cascade:
            continue
        if all(t.asr for t in grid.recipe.tests.values()):
            raise GridError(f"{where}: variants.{name}.cascade: the recipe has no translation test to decode")
        generate = {**grid.recipe.generate, **v.generate}
        other = [k for k in generate if k not in CASCADE_FLAGS + SCORING_FLAGS and generate[k] not in (False, None)]
        if other:
            raise GridError(f"{where}: variants.{name}: the cascade decodes with {', '.join(CASCADE_FLAGS)} only, "
                            f"so generate flag --{other[0]} would make its decoding differ from fairseq-generate's; "
                            "remove the flag or the cascade")


def check_commands(grid: Grid, out_dir) -> None:
    """Parse every cell's fairseq-train and fairseq-generate command with fairseq's own parsers
    (the plugin's registered task, model and criterion included): an unknown flag or a bad value
    is a :class:`GridError` naming the variant, before any cell runs."""
    from fairseq import options

    for variant in grid.variants:
        cell = grid.cell(out_dir, variant, grid.seeds_of(variant)[0])
        for step, argv in cell.steps:
            if argv[0] == "fairseq-train":
                parser = options.get_training_parser()
            elif argv[0] == "fairseq-generate":
                parser = options.get_generation_parser()
            else:
                continue
            try:
                _, extra = options.parse_args_and_arch(parser, argv[1:], parse_known=True)
            except SystemExit:  # argparse printed what is wrong
                raise GridError(f"variant {variant}: {argv[0]} rejects its arguments (above): {shlex.join(argv)}") from None
            if extra:
                raise GridError(f"variant {variant}: {argv[0]} does not know {' '.join(extra)} ({step}); "
                                "check the flag's spelling against the task, model and criterion dataclasses")
