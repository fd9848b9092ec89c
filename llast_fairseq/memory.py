"""Memory per GPU of LLaST training, computed from the model configs (``llast-memory``).

A training process of ``--arch llast`` holds:

* frozen weights: Whisper's encoder in float32 (the model casts it so, its positional embedding
  included) and the LLM in ``--llm-dtype``;
* trained parameters (S-LoRA, L-LoRA, the adaptor), float32, with their gradients and Adam's two
  moments: 16 bytes each; under ``pytorch_ddp`` with several processes also DDP's gradient
  buckets, 4 more;
* activations: the tensors autograd saves for the backward pass, counted layer by layer from the
  architecture as torch 2.13, peft 0.21, transformers 5.24 and openai-whisper save them (each
  formula below equals the bytes that ``torch.autograd.graph.saved_tensors_hooks`` sees, tested
  in tests/unit/test_memory.py), plus the working memory at the peak (:func:`activations`): an
  estimate, which :func:`measure` checks with the whole against the peak resident memory of a
  real training step on the CPU.

What the formulas follow: LoRA adapters are float32 over a bfloat16 LLM (models/lora.py), so peft
casts each LoRA input to float32 and its dropout keeps a mask (1 byte an element on CUDA; on the
CPU torch keeps a float32 noise tensor instead); the LLM's attention gets a padding mask, so
SDPA runs with an additive ``[B, 1, T, T]`` bias in the LLM's dtype that each layer keeps, and
grouped-query keys and values are repeated to all heads first; Whisper runs at its 1,500
positions (``--arch llast`` pads every clip to 30 s) while the LLM sees the clip's own positions.
Not modelled: the CUDA context and the caching allocator's fragmentation (hence the 10% margin
of :data:`FIT_MARGIN`), ``--autocast-bf16``, ``--trim-audio-padding``, and LoRA targets other
than the defaults.
"""
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

from whisper.model import ModelDimensions

F32 = 4  # bytes of a float32
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9
GPUS_GB = (24, 40, 80)
FIT_MARGIN = 0.9  # a model "fits" when the estimate is at most 90% of the card (context, fragmentation)

# openai-whisper's checkpoints save these dims (whisper.model.ModelDimensions, the "dims" of
# large-v2.pt / large-v3.pt); the Hugging Face configs openai/whisper-large-v2 and -v3 say the same
# (d_model 1280, encoder_layers 32, encoder_attention_heads 20, max_source_positions 1500,
# num_mel_bins 80 / 128).
WHISPER = {
    "large-v2": ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20,
                                n_audio_layer=32, n_vocab=51865, n_text_ctx=448, n_text_state=1280,
                                n_text_head=20, n_text_layer=32),
    "large-v3": ModelDimensions(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20,
                                n_audio_layer=32, n_vocab=51866, n_text_ctx=448, n_text_state=1280,
                                n_text_head=20, n_text_layer=32),
}

# The LLMs of LLaST's official configs (github.com/ChenX17/xtuner, branch main, commit c33bc60:
# workspace/llast_2b_tinyllama_chat.py: 'TinyLlama/TinyLlama-1.1B-Chat-v1.0' and
# workspace/llast_8b_llama2_chat.py: 'NousResearch/Llama-2-7b-chat-hf', each with
# 'openai/whisper-large-v2'), with the fields of those models' config.json that size them.
LLMS = {
    "TinyLlama-1.1B-Chat-v1.0": dict(model_type="llama", hidden_size=2048, intermediate_size=5632,
                                     num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                                     vocab_size=32000, tie_word_embeddings=False),
    "Llama-2-7b-chat-hf": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                               vocab_size=32000, tie_word_embeddings=False),
}

# The paper's two sizes: total parameters with LoRA at r=512 and r=128 come to 2.2B and 8.7B.
PRESETS = {"2B": ("large-v2", "TinyLlama-1.1B-Chat-v1.0"), "8B": ("large-v2", "Llama-2-7b-chat-hf")}


@dataclass(frozen=True)
class LlmDims:
    """The fields of a Hugging Face Llama config that size the model."""
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    head_dim: int = 0  # 0: hidden_size // num_attention_heads, as LlamaConfig defaults it

    @property
    def head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_config(cls, config) -> "LlmDims":
        """From a ``LlamaConfig`` or the dict of a Llama ``config.json``."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        if get("model_type") != "llama":
            raise ValueError(f"the memory formulas follow Hugging Face's Llama (bias-free linears, "
                             f"SwiGLU MLP); this config's model_type is {get('model_type')!r}")
        return cls(get("hidden_size"), get("intermediate_size"), get("num_hidden_layers"),
                   get("num_attention_heads"), get("num_key_value_heads") or get("num_attention_heads"),
                   get("vocab_size"), bool(get("tie_word_embeddings", False)), get("head_dim") or 0)


@dataclass(frozen=True)
class Recipe:
    """The model settings that change memory (``--arch llast``'s defaults)."""
    whisper_lora_r: int = 128
    whisper_lora_dropout: float = 0.05
    llm_lora_r: int = 512
    llm_lora_dropout: float = 0.05
    llm_dtype: str = "bfloat16"
    frame_stack: int = 1
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class Batch:
    """One training batch: every example padded to these lengths."""
    size: int = 8
    audio_positions: int = 1500  # Whisper positions holding the clip (50 a second; 30 s: 1,500)
    prompt_tokens: int = 20  # LLaST's Llama-2 prompt around the audio
    target_tokens: int = 64  # the target and its EOS

    def llm_audio(self, frame_stack: int) -> int:
        return -(-self.audio_positions // frame_stack)

    def prefix(self, frame_stack: int) -> int:
        """Positions before the target: prompt and audio after the adaptor."""
        return self.prompt_tokens + self.llm_audio(frame_stack)

    def llm_positions(self, frame_stack: int) -> int:
        """What the LLM runs on: the prefix and the target but its EOS (fairseq's shifted input)."""
        return self.prefix(frame_stack) + self.target_tokens - 1


# --- parameters ---------------------------------------------------------------------------------

def whisper_params(d: ModelDimensions) -> int:
    """Parameters of openai-whisper's AudioEncoder (the positional embedding is a buffer)."""
    s = d.n_audio_state
    convs = d.n_mels * s * 3 + s + s * s * 3 + s
    block = 4 * s * s + 3 * s + 2 * s + (s * 4 * s + 4 * s) + (4 * s * s + s) + 2 * s
    return convs + d.n_audio_layer * block + 2 * s


def whisper_buffer_elements(d: ModelDimensions) -> int:
    return d.n_audio_ctx * d.n_audio_state


def llm_params(c: LlmDims) -> int:
    """Parameters of LlamaForCausalLM."""
    h, kv = c.num_attention_heads * c.head, c.num_key_value_heads * c.head
    attention = c.hidden_size * h + 2 * c.hidden_size * kv + h * c.hidden_size
    layer = attention + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    embeddings = c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
    return c.num_hidden_layers * layer + embeddings + c.hidden_size


def whisper_lora_params(d: ModelDimensions, r: int) -> int:
    """S-LoRA on query, key, value, out (s -> s) and mlp.0, mlp.2 (s <-> 4s) of every block."""
    s = d.n_audio_state
    return d.n_audio_layer * r * (4 * 2 * s + 2 * 5 * s)


def llm_lora_params(c: LlmDims, r: int) -> int:
    """L-LoRA on every linear of the LLM but lm_head (peft's all-linear)."""
    H, h, kv, I = c.hidden_size, c.num_attention_heads * c.head, c.num_key_value_heads * c.head, c.intermediate_size
    return c.num_hidden_layers * r * ((H + h) * 2 + (H + kv) * 2 + (H + I) * 3)


def adaptor_params(d: ModelDimensions, c: LlmDims, frame_stack: int) -> int:
    """The mlp adaptor: Linear(k * s, H), Linear(H, H), Linear(H, H), with biases."""
    H = c.hidden_size
    return frame_stack * d.n_audio_state * H + H + 2 * (H * H + H)


def trained_params(d: ModelDimensions, c: LlmDims, recipe: Recipe) -> Dict[str, int]:
    return {"S-LoRA": whisper_lora_params(d, recipe.whisper_lora_r),
            "L-LoRA": llm_lora_params(c, recipe.llm_lora_r),
            "adaptor": adaptor_params(d, c, recipe.frame_stack)}


# --- activations --------------------------------------------------------------------------------

def _mask_bytes(dropout: float, device: str) -> int:
    """Bytes per element that LoRA's dropout keeps: none without dropout, a bool mask on CUDA, a
    float32 noise tensor on the CPU (torch's fused dropout kernel is CUDA-only)."""
    return 0 if dropout == 0 else (1 if device == "cuda" else F32)


def whisper_saved(d: ModelDimensions, recipe: Recipe, batch: Batch, device: str) -> Dict[str, int]:
    """Bytes Whisper keeps for S-LoRA's gradients (nothing when it is frozen): ``saved`` over all
    blocks and ln_post, and ``block``, one block's when it is recomputed."""
    r = recipe.whisper_lora_r
    if r == 0:
        return {"saved": 0, "block": 0}
    n, s, f = batch.size * d.n_audio_ctx, d.n_audio_state, 4 * d.n_audio_state
    m = _mask_bytes(recipe.whisper_lora_dropout, device)
    norm = n * s * F32 + 2 * n * F32  # LayerNorm: input, mean, rstd
    # LoRA on query, key, value, out, mlp.0 (s wide) and mlp.2 (4s): dropout's mask, LoRA A's input
    # (dropout's output; without dropout the layer's own input, which query, key and value share
    # and out shares with SDPA's output), LoRA B's input
    inputs = 5 * s + f if m else 2 * s + f
    lora = n * (5 * s + f) * m + n * inputs * F32 + 6 * n * r * F32
    attention = 4 * n * s * F32 + n * d.n_audio_head * F32  # SDPA: q, k, v, output, logsumexp
    block = 2 * norm + lora + attention + n * f * F32  # + GELU's input
    # the first block's input needs no gradient: its attn_ln and q/k/v dropout keep nothing
    first = block - norm - 3 * n * s * m
    if recipe.gradient_checkpointing:
        return {"saved": d.n_audio_layer * n * s * F32 + norm, "block": block}
    return {"saved": first + (d.n_audio_layer - 1) * block + norm, "block": block}


def adaptor_saved(d: ModelDimensions, c: LlmDims, recipe: Recipe, batch: Batch) -> int:
    """The adaptor's inputs to its three linears and two GELUs, float32, and the prefix that the
    decoder gathers (its index, int64, and the embeddings, LLM dtype)."""
    k, w = recipe.frame_stack, DTYPE_BYTES[recipe.llm_dtype]
    n = batch.size * batch.llm_audio(k)
    prefix = batch.size * batch.prefix(k)
    return n * k * d.n_audio_state * F32 + 4 * n * c.hidden_size * F32 + prefix * (c.hidden_size * w + 8)


def llm_saved(c: LlmDims, recipe: Recipe, batch: Batch, device: str) -> Dict[str, int]:
    """Bytes the LLM keeps: ``saved`` over all layers and the final norm, ``layer`` one layer's."""
    w, r = DTYPE_BYTES[recipe.llm_dtype], recipe.llm_lora_r
    T = batch.llm_positions(recipe.frame_stack)
    n, H, I = batch.size * T, c.hidden_size, c.intermediate_size
    heads = c.num_attention_heads
    m = _mask_bytes(recipe.llm_lora_dropout, device) if r else 0
    norm = n * H * F32 + n * F32  # RMSNorm: float32 input, rsqrt
    # LoRA on q, k, v, o, gate, up (H wide) and down (I): dropout's mask, LoRA A's input (a float32
    # copy; with neither dropout nor a cast, the layer's own input, which q, k and v share, gate and
    # up share, and o shares with SDPA's output), LoRA B's input
    inputs = 6 * H + I if m or w != F32 else 2 * H + I
    lora = (n * (6 * H + I) * m + n * inputs * F32 + 7 * n * r * F32) if r else 0
    # q, keys and values repeated to every head, output, logsumexp, and the additive padding mask
    attention = 4 * n * heads * c.head * w + n * heads * F32 + batch.size * T * T * w
    layer = 2 * norm + lora + attention + 3 * n * I * w  # + SiLU's input, its output, up
    rotary = 2 * batch.size * T * c.head * w  # cos and sin, shared by the layers
    if recipe.gradient_checkpointing:
        return {"saved": c.num_hidden_layers * n * H * w + norm, "layer": layer + rotary}
    return {"saved": c.num_hidden_layers * layer + rotary + norm, "layer": layer}


def head_saved(c: LlmDims, batch: Batch) -> int:
    """fairseq's float32 log-probabilities over the target positions, the target ids and pad mask."""
    return batch.size * batch.target_tokens * (c.vocab_size * F32 + 9)


def activations(d: ModelDimensions, c: LlmDims, recipe: Recipe, batch: Batch, device: str = "cuda") -> Dict[str, int]:
    """Saved bytes by part, the working memory on top of them at the peak, and the peak
    (``total``): the largest of three moments.

    * the end of the forward pass: everything saved, plus the logits and the second float32
      log-probabilities that fairseq's accuracy report makes;
    * the LLM's backward pass starting: everything saved, the last layer's saved tensors again
      under checkpointing (recomputed), and the gradients in flight in its MLP, about four float32
      tensors of the MLP's width;
    * Whisper's backward pass (the LLM's tensors are freed by then): Whisper's and the adaptor's,
      a block recomputed under checkpointing, and four float32 tensors of Whisper's MLP width.

    The saved parts are exact; the "four tensors" are not derived: they were read off one measured
    step (the working memory above the saved tensors was 33-41 MB where one MLP-wide float32
    tensor took 8.7 MB) and then checked on other sizes (README, "Running at scale").
    """
    whisper, llm = whisper_saved(d, recipe, batch, device), llm_saved(c, recipe, batch, device)
    parts = {"whisper": whisper["saved"], "adaptor": adaptor_saved(d, c, recipe, batch),
             "llm": llm["saved"], "head": head_saved(c, batch)}
    saved = sum(parts.values())
    recomputed = 1 if recipe.gradient_checkpointing else 0
    logits = batch.size * batch.target_tokens * c.vocab_size * (DTYPE_BYTES[recipe.llm_dtype] + F32)
    llm_grads = 4 * batch.size * batch.llm_positions(recipe.frame_stack) * c.intermediate_size * F32
    whisper_grads = 4 * batch.size * d.n_audio_ctx * 4 * d.n_audio_state * F32 if recipe.whisper_lora_r else 0
    peak = max(saved + logits,
               saved + recomputed * llm["layer"] + llm_grads,
               parts["whisper"] + parts["adaptor"] + recomputed * whisper["block"] + whisper_grads)
    return {**parts, "working": peak - saved, "total": peak}


# --- the whole process --------------------------------------------------------------------------

def estimate(d: ModelDimensions, c: LlmDims, recipe: Recipe, batch: Batch, processes: int = 8,
             device: str = "cuda") -> Dict[str, float]:
    """Bytes per process by row of the README's table."""
    trained = sum(trained_params(d, c, recipe).values())
    weights = (whisper_params(d) + whisper_buffer_elements(d)) * F32 + llm_params(c) * DTYPE_BYTES[recipe.llm_dtype]
    rows = {"frozen weights": weights,
            "trained params, grads, Adam": trained * 4 * F32,
            "DDP gradient buckets": trained * F32 if processes > 1 else 0,
            "activations": activations(d, c, recipe, batch, device)["total"]}
    return {**rows, "total": sum(rows.values()), "trained_params": trained}


def largest_batch(d, c, recipe, batch: Batch, gb: float, processes: int = 8, limit: int = 1024) -> int:
    """The largest batch size whose estimate fits :data:`FIT_MARGIN` of ``gb`` (0: none)."""
    best = 0
    for size in range(1, limit + 1):
        if estimate(d, c, recipe, replace(batch, size=size), processes)["total"] > FIT_MARGIN * gb * GB:
            break
        best = size
    return best


def preset_table(name: str, recipe: Recipe, batch: Batch, processes: int) -> str:
    """Markdown: the rows of :func:`estimate` without and with gradient checkpointing, and the
    largest batch per GPU size."""
    whisper_name, llm_name = PRESETS[name]
    d, c = WHISPER[whisper_name], LlmDims.from_config(LLMS[llm_name])
    plain, ckpt = (replace(recipe, gradient_checkpointing=g) for g in (False, True))
    a, b = estimate(d, c, plain, batch, processes), estimate(d, c, ckpt, batch, processes)
    total_params = whisper_params(d) + llm_params(c) + a["trained_params"]
    k = recipe.frame_stack
    lines = [
        f"{name}: Whisper {whisper_name} encoder (float32) + {llm_name} ({recipe.llm_dtype}), "
        f"{total_params / 1e9:.2f}B parameters of which {a['trained_params'] / 1e6:.0f}M trained "
        f"(S-LoRA r={recipe.whisper_lora_r}, L-LoRA r={recipe.llm_lora_r}, adaptor); batch {batch.size} "
        f"x {batch.llm_positions(k) + 1} LLM positions ({batch.llm_audio(k)} audio, {batch.prompt_tokens} "
        f"prompt, {batch.target_tokens} target), Whisper at {WHISPER[whisper_name].n_audio_ctx} positions",
        "",
        "| GB per GPU | no checkpointing | --gradient-checkpointing |",
        "|---|---|---|",
    ]
    for row in ("frozen weights", "trained params, grads, Adam", "DDP gradient buckets", "activations", "total"):
        label = f"activations at batch {batch.size}" if row == "activations" else row
        label = f"**{label}**" if row == "total" else label
        lines.append(f"| {label} | {a[row] / GB:.1f} | {b[row] / GB:.1f} |")
    per_example = batch.llm_positions(k) + 1
    for gb in GPUS_GB:
        fits = [largest_batch(d, c, r, batch, gb, processes) for r in (plain, ckpt)]
        cells = [f"batch {n} (--max-tokens {n * per_example})" if n else "does not fit" for n in fits]
        lines.append(f"| largest batch on {gb} GB | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


# --- checking the estimate against a measured training step on the CPU ---------------------------

def measure_step(data: str, models: str, flags: List[str], batch_size: int) -> Dict:
    """Peak resident memory of one forward and backward pass of the real model on ``batch_size``
    30 s clips, above the memory before it (model built, Adam's state allocated, gradients freed
    as fairseq frees them); with the shapes that :func:`activations` needs. Run it in a process of
    its own started with ``MALLOC_MMAP_THRESHOLD_`` low, so that freed tensors leave the resident
    set (:func:`measure` does)."""
    import torch

    from .benchmark import build, clip_batch, memory_kb
    from .models.audio_encoder import SAMPLES_PER_POSITION

    torch.set_num_threads(1)
    cfg, task, model = build(Path(data), Path(models), "30 s", *flags)
    criterion = task.build_criterion(cfg.criterion)
    sample = clip_batch(task)
    pad = task.target_dictionary.pad()
    sample = {**sample, "net_input": {k: v[:batch_size] for k, v in sample["net_input"].items()},
              "target": sample["target"][:batch_size]}
    sample["ntokens"] = int(sample["target"].ne(pad).sum())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    model.train()
    for step in range(2):  # the first step allocates Adam's state and touches every code path
        for p in params:
            p.grad = None
        if step == 1:
            before = memory_kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM
        loss, _, _ = criterion(model, sample)
        loss.backward()
        if step == 0:
            optimizer.step()
    peak = memory_kb("VmHWM")
    net = sample["net_input"]
    audio = -(-int(net["src_lengths"].max()) // SAMPLES_PER_POSITION)
    c = model.cfg
    return {"measured": (peak - before) * 1024, "grads": sum(p.numel() for p in params) * F32,
            "recipe": asdict(Recipe(c.whisper_lora_r, c.whisper_lora_dropout, c.llm_lora_r, c.llm_lora_dropout,
                                    str(c.llm_dtype), c.frame_stack, c.gradient_checkpointing)),
            "whisper": asdict(model.encoder.dims), "llm": model.decoder.llm.config.to_dict(),
            "batch": asdict(Batch(batch_size, audio,
                                  net["prompt_before"].size(1) + net["prompt_after"].size(1),
                                  net["prev_output_tokens"].size(1)))}


VALIDATION = {  # scaled-down models: Whisper 4 x 128 wide, Llama 4 x 128 wide (MLP 344), 30 s clips
    "whisper": dict(n_state=128, n_head=2, n_layer=4),
    "llm": dict(hidden=128, layers=4, heads=4, intermediate=344, lm_head_rows=0),
    "flags": ["--whisper-lora-r", "16", "--llm-lora-r", "32"],
    "variants": {"float32": [], "bfloat16": ["--llm-dtype", "bfloat16"],
                 "bfloat16, checkpointing": ["--llm-dtype", "bfloat16", "--gradient-checkpointing"]},
}


def measure(work: Optional[Path] = None, batch_size: int = 4, sizes: Dict = VALIDATION, log=print) -> List[Dict]:
    """Estimate against measured peak for each variant of ``sizes`` (:data:`VALIDATION`), each in
    a process of its own."""
    from . import benchmark
    from .tiny_models import make_tiny_llm, make_tiny_whisper

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work or tmp)
        inputs = benchmark.make_inputs(root, [])
        models = root / "memory-check"
        models.mkdir(parents=True, exist_ok=True)
        make_tiny_whisper(str(models / "whisper.pt"), **sizes["whisper"])
        texts = [line.split("\t")[3] for line in (inputs["data"] / "test_30s.tsv").read_text().splitlines()[1:]]
        make_tiny_llm(str(models / "llm"), texts * 50, vocab_size=300, **sizes["llm"])
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
        rows = []
        for name, flags in sizes["variants"].items():
            log(f"  measuring a training step: {name}")
            call = json.dumps([str(inputs["data"]), str(models), sizes["flags"] + flags, batch_size])
            child = subprocess.run(
                [sys.executable, "-c", "import json, sys; from llast_fairseq.memory import measure_step; "
                                       "print(json.dumps(measure_step(*json.loads(sys.argv[1]))))", call],
                stdout=subprocess.PIPE, text=True, check=True, env=env)
            got = json.loads(child.stdout.strip().splitlines()[-1])
            act = activations(ModelDimensions(**got["whisper"]), LlmDims.from_config(got["llm"]),
                              Recipe(**got["recipe"]), Batch(**got["batch"]), device="cpu")
            estimated = act["total"] + got["grads"]
            rows.append({"variant": name, "measured_mb": got["measured"] / 2**20, "estimated_mb": estimated / 2**20,
                         "saved_mb": (act["total"] - act["working"]) / 2**20,
                         "error": estimated / got["measured"] - 1})
            log(f"    {json.dumps(rows[-1])}")
    return rows
