"""The ``llast_st`` task: fairseq speech-to-text manifests, LLaST prompts, an LLM's dictionary.

Manifests are fairseq S2T TSVs (id, audio, n_frames, tgt_text, and src_text, src_lang, tgt_lang,
speaker) with config.yaml beside them, read with fairseq's own reader; several splits can be
joined with commas (``train_fr_en,train_de_en``), and one manifest may mix language pairs.
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairseq.data.audio.data_cfg import S2TDataConfig
from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import MISSING

from ..data.llast_dataset import LlastDataset
from ..data.llm_dictionary import LLMDetokenizer, build_llm_dictionary
from ..data.prompts import PromptBuilder
from ..models.hf_llm import load_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class LlastSTConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "manifest root: <split>.tsv files and config.yaml"})
    config_yaml: str = field(default="config.yaml", metadata={"help": "data config (audio_root) in the manifest root"})
    llm_path: Optional[str] = field(
        default=None, metadata={"help": "local Hugging Face directory of the LLM and its tokenizer; "
                                        "the target dictionary mirrors this tokenizer"})
    pad_token: Optional[str] = field(
        default=None, metadata={"help": "token to pad with when the tokenizer has no pad token other "
                                        "than EOS and no unk token (Llama-3: a reserved special token)"})
    prompt_template: str = field(
        default="llama2", metadata={"help": "'llama2' ([INST] <audio>\\n{instruction} [/INST]), 'chat' "
                                            "(the tokenizer's chat template) or a string with <audio> and {instruction}"})
    asr_augment: bool = field(
        default=False, metadata={"help": "add an ASR example (target src_text) beside every translation "
                                         "example of the train splits, as LLaST does"})
    eval_task: ChoiceEnum(["st", "asr"]) = field(
        default="st", metadata={"help": "what non-train splits ask for: translation (st) or transcription (asr)"})
    src_lang: Optional[str] = field(
        default=None, metadata={"help": "source language for manifests without a src_lang column"})
    tgt_lang: Optional[str] = field(
        default=None, metadata={"help": "target language for manifests without a tgt_lang column"})


@register_task("llast_st", dataclass=LlastSTConfig)
class LlastSTTask(FairseqTask):
    def __init__(self, cfg: LlastSTConfig, tokenizer, dictionary):
        super().__init__(cfg)
        self.tokenizer = tokenizer
        self.tgt_dict = dictionary
        self.prompts = PromptBuilder(tokenizer, cfg.prompt_template)
        self.data_cfg = S2TDataConfig(Path(cfg.data) / cfg.config_yaml)

    @classmethod
    def setup_task(cls, cfg: LlastSTConfig, **kwargs):
        from transformers import AutoConfig

        tokenizer = load_tokenizer(cfg.llm_path)
        vocab_size = AutoConfig.from_pretrained(cfg.llm_path, local_files_only=True).vocab_size
        dictionary = build_llm_dictionary(tokenizer, vocab_size, cfg.pad_token)
        logger.info(f"target dictionary: {len(dictionary)} entries mirroring {cfg.llm_path}")
        return cls(cfg, tokenizer, dictionary)

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return self.tgt_dict

    def max_positions(self):
        return None

    def build_bpe(self, args):
        """fairseq-generate detokenizes through this: hypotheses print as plain text."""
        return LLMDetokenizer(self.tokenizer, self.tgt_dict)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, task_cfg=None, **kwargs):
        """``split`` names one manifest or several joined by commas (one dataset over all rows)."""
        audio_paths, n_frames, examples, prompts, texts = [], [], [], [], []
        for name in split.split(","):
            tsv = Path(self.cfg.data) / f"{name}.tsv"
            rows = SpeechToTextDatasetCreator._load_samples_from_tsv(self.cfg.data, name)
            is_train = name.startswith("train")
            tasks = (["st", "asr"] if self.cfg.asr_augment else ["st"]) if is_train else [str(self.cfg.eval_task)]
            audio_root = Path(self.data_cfg.audio_root)
            for i, row in enumerate(rows):
                where = f"{tsv}: row {i + 2} (id {row.get('id', '?')!r})"
                audio_paths.append((audio_root / _field(row, "audio", where)).as_posix())
                try:
                    n_frames.append(int(_field(row, "n_frames", where)))
                except ValueError:
                    raise ValueError(f"{where}: field 'n_frames' is {row['n_frames']!r}, not a whole number")
                src = _field(row, "src_lang", where, self.cfg.src_lang)
                tgt = _field(row, "tgt_lang", where, self.cfg.tgt_lang)
                for task in tasks:
                    examples.append((len(audio_paths) - 1, task))
                    prompts.append(self.prompts.ids(task, src, src if task == "asr" else tgt))
                    texts.append(_field(row, "src_text" if task == "asr" else "tgt_text", where))
            logger.info(f"{name}: {len(rows)} rows ({'+'.join(tasks)}) from {tsv}")
        eos = self.tgt_dict.eos()
        targets = [ids + [eos] for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        self.datasets[split] = LlastDataset(split, audio_paths, n_frames, examples, prompts, targets,
                                            self.tgt_dict, shuffle=split.startswith("train"))


def _field(row: dict, name: str, where: str, default: Optional[str] = None) -> str:
    """A required manifest field; ``default`` stands in only where the column is absent."""
    value = row.get(name)
    if value is None and default is not None:
        return default
    if value is None or not value.strip():
        hint = {"src_lang": " (or pass --src-lang for a one-direction manifest)",
                "tgt_lang": " (or pass --tgt-lang for a one-direction manifest)"}.get(name, "")
        raise ValueError(f"{where}: field {name!r} is {'missing' if value is None else 'empty'}; "
                         f"fill it in the manifest{hint}")
    return value
