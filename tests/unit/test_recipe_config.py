"""The CoVoST-2 recipe (examples/speech_translation_llm) against the code it documents.

The hydra YAML may only use keys the registered dataclasses have, and must hold the paper's
recipe; every llast-specific ``--flag`` in the README's bash blocks must be a field of the task,
model or criterion config. Docs and config then cannot drift from the code unnoticed.
"""
import dataclasses
import re

import pytest
import yaml
from conftest import REPO
from omegaconf import OmegaConf

from fairseq.dataclass.configs import FairseqConfig
from fairseq.optim.adam import FairseqAdamConfig
from fairseq.optim.lr_scheduler.cosine_lr_scheduler import CosineLRScheduleConfig

import llast_fairseq  # noqa: F401  (registers the task, model and criterion)
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
from fairseq.models import MODEL_DATACLASS_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY
from llast_fairseq.criterions.llast_cross_entropy import LlastCrossEntropyConfig
from llast_fairseq.models.llast import LlastConfig
from llast_fairseq.tasks.llast_st import LlastSTConfig

EXAMPLE = REPO / "examples" / "speech_translation_llm"
YAML = EXAMPLE / "config" / "llast_covost2.yaml"
README = EXAMPLE / "README.md"

# section -> (registered name, dataclass) for the registry-chosen sections
COMPONENTS = {
    "task": ("llast_st", LlastSTConfig),
    "model": ("llast", LlastConfig),
    "criterion": ("llast_cross_entropy", LlastCrossEntropyConfig),
    "optimizer": ("adam", FairseqAdamConfig),
    "lr_scheduler": ("cosine", CosineLRScheduleConfig),
}
# flags the plugin adds; anything else in the README is fairseq's or a script's own
LLAST_FLAG_PREFIXES = ("--llm-", "--whisper-", "--asr-", "--eval-bleu", "--eval-task", "--prompt-",
                       "--pad-token", "--frame-", "--trim-audio", "--label-smoothing", "--config-yaml")


def field_names(dc):
    return {f.name for f in dataclasses.fields(dc)}


@pytest.fixture(scope="module")
def recipe():
    return OmegaConf.load(YAML)


def test_yaml_components_are_the_registered_ones(recipe):
    registries = {"task": TASK_DATACLASS_REGISTRY, "model": MODEL_DATACLASS_REGISTRY,
                  "criterion": CRITERION_DATACLASS_REGISTRY}
    for section, (name, dc) in COMPONENTS.items():
        assert recipe[section]["_name"] == name, section
        if section in registries:
            assert registries[section][name] is dc, section


@pytest.mark.parametrize("section", list(COMPONENTS))
def test_yaml_component_keys_exist_in_their_dataclass(recipe, section):
    _, dc = COMPONENTS[section]
    keys = set(recipe[section]) - {"_name"}
    unknown = keys - field_names(dc)
    assert not unknown, f"{section}: {sorted(unknown)} are not fields of {dc.__name__}"


def test_yaml_core_sections_exist_in_fairseq_config(recipe):
    groups = {}
    for f in dataclasses.fields(FairseqConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            groups[f.name] = default if isinstance(default, type) else type(default)
    for section in set(recipe) - set(COMPONENTS):
        assert section in groups, f"unknown top-level section {section!r}"
        unknown = set(recipe[section].keys()) - field_names(groups[section])
        assert not unknown, f"{section}: {sorted(unknown)} are not fairseq {section} options"
    assert "user_dir" in recipe.common.keys()


def test_yaml_is_the_paper_recipe(recipe):
    assert recipe.optimization.lr == [2e-4]
    assert recipe.optimization.clip_norm == 1.0
    assert recipe.optimizer.weight_decay == 0.0
    assert recipe.lr_scheduler.min_lr == 0.0  # cosine down to 0
    m, t = recipe.model, recipe.task
    assert (m.llm_training, m.llm_lora_r, m.llm_lora_alpha, m.llm_lora_dropout) == ("lora", 512, 256, 0.05)
    assert m.llm_lora_targets == "all-linear"
    assert (m.whisper_lora_r, m.whisper_lora_alpha) == (128, 64)
    assert m.adaptor == "mlp" and m.frame_stack == 1 and m.trim_audio_padding is False
    assert t.asr_augment is True and t.eval_bleu is True
    assert recipe.checkpoint.best_checkpoint_metric == "bleu"
    assert recipe.checkpoint.maximize_best_checkpoint_metric is True
    assert recipe.criterion.label_smoothing == 0.0
    # the paths and update counts are left for the command line
    for section, key in (("common", "user_dir"), ("task", "data"), ("task", "llm_path"),
                         ("model", "whisper_path"), ("optimization", "max_update"),
                         ("lr_scheduler", "warmup_updates")):
        assert OmegaConf.is_missing(recipe[section], key), f"{section}.{key} should be ???"


def test_llast_arch_defaults_are_the_yaml_values(recipe):
    """`--arch llast` alone gives the paper's model settings the README and YAML state."""
    defaults = LlastConfig()
    for key in set(recipe.model.keys()) - {"_name", "whisper_path", "llm_dtype"}:
        assert getattr(defaults, key) == recipe.model[key], key


def readme_bash_flags():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "no ```bash blocks in the README"
    return sorted({f for b in blocks for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", b)})


def test_readme_llast_flags_exist_in_the_dataclasses():
    fields = field_names(LlastSTConfig) | field_names(LlastConfig) | field_names(LlastCrossEntropyConfig)
    flags = [f for f in readme_bash_flags() if f.startswith(LLAST_FLAG_PREFIXES)]
    assert {"--llm-path", "--whisper-path", "--asr-augment", "--eval-bleu", "--llm-lora-r"} <= set(flags)
    unknown = [f for f in flags if f[2:].replace("-", "_") not in fields]
    assert not unknown, f"README flags without a config field: {unknown}"


def test_readme_recipe_flags_match_the_yaml(recipe):
    """The fairseq-train command and the YAML state the same numbers."""
    text = README.read_text(encoding="utf-8")
    train = re.search(r"```bash\nfairseq-train (.*?)```", text, re.S).group(1)
    expect = {"--lr": "2e-4", "--clip-norm": "1.0", "--weight-decay": "0.0",
              "--llm-lora-r": "512", "--llm-lora-alpha": "256", "--llm-lora-dropout": "0.05",
              "--whisper-lora-r": "128", "--whisper-lora-alpha": "64", "--lr-scheduler": "cosine",
              "--arch": "llast", "--criterion": "llast_cross_entropy", "--optimizer": "adam"}
    for flag, value in expect.items():
        assert re.search(rf"{flag} {re.escape(value)}(\s|$)", train), flag
    for flag in ("--asr-augment", "--eval-bleu", "--maximize-best-checkpoint-metric"):
        assert re.search(rf"{flag}(\s|$)", train), flag
    assert float(expect["--lr"]) == recipe.optimization.lr[0]
    assert int(expect["--llm-lora-r"]) == recipe.model.llm_lora_r


# ----------------------------------------------------------------------------- experiment grids

GRIDS = sorted(p for p in (EXAMPLE / "experiments").glob("*.yaml") if p.name != "covost2_recipe.yaml")
PAPER_GRIDS = [p for p in GRIDS if p.name.startswith("covost2_")]
GRID_ENV = {"DATA": "/data/covost2", "FLEURS": "/data/fleurs", "LLM": "/models/llm", "WHISPER": "/models/large-v3.pt",
            "MAX_UPDATE": "7000", "WARMUP": "210", "UPDATE_FREQ": "2", "DEMO_CORPUS": "/cache/corpus-default",
            "DEMO_WHISPER": "/cache/whisper-tiny.en.pt", "DEMO_LLM": "/cache/llm-default"}


@pytest.fixture
def grid_env(monkeypatch):
    for name, value in GRID_ENV.items():
        monkeypatch.setenv(name, value)


def test_the_grids_are_there():
    assert {p.name for p in PAPER_GRIDS} == {"covost2_seeds.yaml", "covost2_llm_lora_rank.yaml",
                                            "covost2_lora_ablation.yaml", "covost2_asr_augment.yaml"}
    assert {p.name for p in GRIDS} - {p.name for p in PAPER_GRIDS} == {"demo_cpu.yaml"}


@pytest.mark.parametrize("path", GRIDS, ids=[p.name for p in GRIDS])
def test_grid_flags_exist_in_the_registered_dataclasses(path, grid_env, tmp_path):
    """Every cell's fairseq-train and fairseq-generate command parses with fairseq's own parsers,
    which hold the registered task, model and criterion dataclasses; the plugin's flags are fields."""
    from llast_fairseq.experiments.grid import check_commands, load_grid

    grid = load_grid(path)
    check_commands(grid, tmp_path)
    fields = field_names(LlastSTConfig) | field_names(LlastConfig) | field_names(LlastCrossEntropyConfig)
    flags = {word for cell in grid.cells(tmp_path) for _, argv in cell.steps if argv[0].startswith("fairseq-")
             for word in argv if word.startswith(LLAST_FLAG_PREFIXES)}
    assert {"--llm-path", "--whisper-path", "--asr-augment"} <= flags
    unknown = sorted(f for f in flags if f[2:].replace("-", "_") not in fields)
    assert not unknown, f"{path.name}: flags without a config field: {unknown}"
    if path in PAPER_GRIDS:  # GPU hours written beside it
        assert re.search(r"About [\d,]+ GPU hours", path.read_text()), path.name


def test_paper_grids_hold_the_paper_recipe(recipe, grid_env):
    """The grids' base recipe says what config/llast_covost2.yaml says, flag for key; and their
    paper variant is the same cell in every grid, so grids run into one directory share it."""
    from llast_fairseq.experiments.grid import load_grid

    grid = load_grid(EXAMPLE / "experiments" / "covost2_seeds.yaml")
    flags = {**grid.recipe.task, **grid.recipe.train}  # the hydra config is the training recipe
    raw = yaml.safe_load((EXAMPLE / "experiments" / "covost2_recipe.yaml").read_text())
    given = {f for f, v in {**raw["task"], **raw["train"]}.items() if "$" in str(v)}  # per machine or run
    compared = set()
    for flag, value in flags.items():
        if flag in given:
            continue
        key = flag.replace("-", "_")
        for section in recipe:
            if key in recipe[section] and not OmegaConf.is_missing(recipe[section], key):
                expected = recipe[section][key]
                expected = expected[0] if OmegaConf.is_list(expected) else expected
                if isinstance(expected, (int, float)) and not isinstance(expected, bool):
                    assert float(value) == float(expected), (flag, value, expected)
                else:
                    assert value == expected, (flag, value, expected)
                compared.add(key)
    assert {"lr", "llm_lora_r", "llm_lora_alpha", "whisper_lora_r", "weight_decay", "clip_norm", "asr_augment",
            "adam_betas", "batch_size", "eval_bleu_args", "best_checkpoint_metric", "prompt_template"} <= compared
    assert flags["arch"] == "llast"
    assert grid.recipe.generate["beam"] == 5 and grid.recipe.generate["max-len-b"] == 256  # README section 4
    cells = {p.name: load_grid(p).cell("/grids", "paper", 1).script() for p in PAPER_GRIDS}
    assert len(set(cells.values())) == 1, "the paper variant differs between grids"
