"""The ``llast`` model: Whisper encoder + adaptor (LlastEncoder) and an LLM with LoRA (LlastDecoder).

Checkpoints hold only what is trained (LoRA weights, adaptor) and the config: the frozen base
weights are rebuilt from ``--whisper-path`` and the task's ``--llm-path``, which it names, and the
prompt contract (template, pad token) it was trained with is checked against the task's.
"""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import merge_with_parent
from fairseq.models import FairseqEncoderDecoderModel, register_model, register_model_architecture
from omegaconf import II

from ..data.prompts import TEMPLATES
from .adaptor import build_adaptor
from .audio_encoder import LlastEncoder
from .hf_llm import DTYPES, load_llm
from .llm_decoder import LlastDecoder
from .lora import add_lora
from .whisper_weights import load_whisper_encoder

# `--arch llast` is the paper's recipe: the defaults below (LoRA r=512/alpha 256 on the LLM,
# S-LoRA r=128/alpha 64, audio padded to 30 s); model sizes come from the checkpoints' paths.

WHISPER_LINEARS = "query,key,value,out,mlp.0,mlp.2"


@dataclass
class LlastConfig(FairseqDataclass):
    whisper_path: str = field(
        default="", metadata={"help": "openai-whisper checkpoint file (e.g. large-v3.pt) or local Hugging "
                                      "Face Whisper directory; only its encoder is used"})
    llm_dtype: ChoiceEnum(list(DTYPES)) = field(
        default="float32", metadata={"help": "dtype of the frozen LLM weights"})
    llm_training: ChoiceEnum(["lora", "full", "frozen"]) = field(
        default="lora",
        metadata={"help": "how the LLM learns: lora (L-LoRA, the paper), full (every weight) or frozen"})
    llm_lora_r: int = field(default=512, metadata={"help": "L-LoRA rank on the LLM (paper: 512)"})
    llm_lora_alpha: float = field(default=256, metadata={"help": "L-LoRA alpha (paper: 256)"})
    llm_lora_dropout: float = field(default=0.05, metadata={"help": "L-LoRA dropout (paper: 0.05)"})
    llm_lora_targets: str = field(
        default="all-linear",
        metadata={"help": "LLM modules for LoRA: all-linear (every linear but lm_head) or comma-separated names"})
    whisper_lora_r: int = field(
        default=128, metadata={"help": "S-LoRA rank on the Whisper encoder (paper: 128); 0 freezes Whisper"})
    whisper_lora_alpha: float = field(default=64, metadata={"help": "S-LoRA alpha (paper: 64)"})
    whisper_lora_dropout: float = field(default=0.05, metadata={"help": "S-LoRA dropout"})
    whisper_lora_targets: str = field(
        default=WHISPER_LINEARS, metadata={"help": "Whisper encoder modules for S-LoRA, comma-separated"})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute the LLM's (and S-LoRA Whisper's) activations in the backward "
                                          "pass to save memory"})
    adaptor: str = field(
        default="mlp", metadata={"help": "adaptor from Whisper states to LLM embeddings: mlp (the paper's "
                                         "Linear-GELU-Linear-GELU-Linear) or another registered one"})
    frame_stack: int = field(
        default=1, metadata={"help": "mlp adaptor: concatenate k consecutive Whisper states into one (paper: 1)"})
    trim_audio_padding: bool = field(
        default=False, metadata={"help": "run Whisper on each utterance at its own length, not padded to 30 s"})
    cache_whisper_states: bool = field(
        default=False, metadata={"help": "keep the frozen Whisper's output for the train and valid audio in "
                                         "RAM, computed once before the first update"})
    whisper_cache_gb: float = field(
        default=16, metadata={"help": "--cache-whisper-states: most GB of states each process keeps (tensor "
                                      "bytes), shortest utterances first; the rest run through Whisper at "
                                      "every step; 0: no cap"})
    autocast_bf16: bool = field(
        default=False, metadata={"help": "run Whisper, the adaptor and the LLM under bfloat16 autocast where "
                                         "that is faster (weights and loss stay float32)"})
    # the prompt contract: the task's settings at training time, saved with the model, checked
    # against the task's when the model is built to decode (no help: the task's flags set them)
    prompt_template: str = II("task.prompt_template")
    pad_token: Optional[str] = II("task.pad_token")


def check_prompt_contract(model_cfg, task_cfg):
    """The task prompts as the model was trained to read (same template, same pad token), or a
    ``ValueError`` naming both settings."""
    for key in ("prompt_template", "pad_token"):
        trained, given = model_cfg[key], task_cfg[key]
        if key == "prompt_template":
            same = TEMPLATES.get(trained, trained) == TEMPLATES.get(given, given)
        else:
            same = trained == given
        if not same:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"the model was trained with {flag} {trained!r} but is asked to decode with "
                             f"{flag} {given!r}: pass {flag} {trained!r}, the prompts it learned to read")


@register_model("llast", dataclass=LlastConfig)
class LlastModel(FairseqEncoderDecoderModel):
    def __init__(self, cfg: LlastConfig, encoder: LlastEncoder, decoder: LlastDecoder):
        super().__init__(encoder, decoder)
        self.cfg = cfg
        self.trained_keys = [name for name, p in self.named_parameters() if p.requires_grad]

    @classmethod
    def build_model(cls, cfg: LlastConfig, task):
        # an --arch preset's config, or an older checkpoint's, may lack fields: take their defaults
        cfg = merge_with_parent(LlastConfig(), cfg, remove_missing=True)
        check_prompt_contract(cfg, task.cfg)
        whisper, dims = load_whisper_encoder(cfg.whisper_path)
        llm = load_llm(task.cfg.llm_path, cfg.llm_dtype)
        if llm.config.vocab_size != len(task.target_dictionary):
            raise ValueError(
                f"the LLM at {task.cfg.llm_path} has {llm.config.vocab_size} output tokens but the task's "
                f"dictionary has {len(task.target_dictionary)}: train and decode with the same --llm-path"
            )
        add_lora(whisper.float(), "whisper_lora", cfg.whisper_lora_r, cfg.whisper_lora_alpha,
                 cfg.whisper_lora_dropout, cfg.whisper_lora_targets)
        training = str(cfg.llm_training)
        if training == "lora" and cfg.llm_lora_r <= 0:
            raise ValueError("--llm-training lora needs --llm-lora-r > 0 (or use --llm-training frozen)")
        add_lora(llm, "llm_lora", cfg.llm_lora_r if training == "lora" else 0, cfg.llm_lora_alpha,
                 cfg.llm_lora_dropout, cfg.llm_lora_targets)
        if training == "full":
            llm.requires_grad_(True)
        if cfg.gradient_checkpointing:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        adaptor = build_adaptor(cfg, dims.n_audio_state, llm.config.hidden_size)
        encoder = LlastEncoder(whisper, dims, adaptor, cfg.trim_audio_padding, cfg.cache_whisper_states,
                               cfg.autocast_bf16, cfg.gradient_checkpointing, cfg.whisper_cache_gb)
        return cls(cfg, encoder, LlastDecoder(task.target_dictionary, llm, cfg.autocast_bf16))

    def max_positions(self):
        return None

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Only the trained parameters: the frozen Whisper and LLM come from their paths."""
        full = super().state_dict(prefix=prefix, keep_vars=keep_vars)
        return OrderedDict((prefix + k, full[prefix + k]) for k in self.trained_keys)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        missing = sorted(set(self.trained_keys) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(self.trained_keys))
        if strict and (missing or unexpected):
            raise RuntimeError(
                "checkpoint does not match the model's trainable parameters (were the LoRA ranks, "
                f"targets, adaptor or base models changed?): missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        return super().load_state_dict(state_dict, strict=False, model_cfg=model_cfg, args=args)


@register_model_architecture("llast", "llast_tiny")
def llast_tiny(cfg):
    """Small LoRA, no S-LoRA and trimmed audio (Whisper on each utterance's own length): tiny
    random-init or small pretrained models on a CPU."""
    cfg.whisper_lora_r = getattr(cfg, "whisper_lora_r", 0)
    cfg.llm_lora_r = getattr(cfg, "llm_lora_r", 8)
    cfg.llm_lora_alpha = getattr(cfg, "llm_lora_alpha", 16)
    cfg.llm_lora_dropout = getattr(cfg, "llm_lora_dropout", 0.0)
    cfg.trim_audio_padding = getattr(cfg, "trim_audio_padding", True)
