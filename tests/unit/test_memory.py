"""llast-memory's estimator: its parameter counts are those of the instantiated models (the paper's
presets on the meta device, peft's trainable count), its activation formulas are the bytes that
autograd saves in the real model's forward pass. (Its peak against a measured training step:
``llast-memory --validate``, too slow for the suite.)"""
import shutil
import weakref
from dataclasses import replace

import pytest
import torch
from conftest import build_task_and_model, first_batch
from transformers import LlamaConfig, LlamaForCausalLM
from whisper.model import AudioEncoder

from llast_fairseq.cli.memory import main
from llast_fairseq.memory import (FIT_MARGIN, GB, LLMS, PRESETS, WHISPER, Batch, LlmDims, Recipe, activations,
                                  adaptor_params, estimate, largest_batch, llm_lora_params, llm_params,
                                  whisper_buffer_elements, whisper_lora_params, whisper_params)
from llast_fairseq.models.adaptor import MLPAdaptor
from llast_fairseq.models.audio_encoder import SAMPLES_PER_POSITION
from llast_fairseq.models.llast import WHISPER_LINEARS
from llast_fairseq.models.lora import add_lora


def trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_parameter_counts_are_the_instantiated_models(preset):
    """Whisper's encoder and the Llama of each preset built on the meta device (no memory), LoRA
    injected by peft as the model injects it (rank 2: the count is linear in the rank)."""
    whisper_name, llm_name = PRESETS[preset]
    d = WHISPER[whisper_name]
    with torch.device("meta"):
        whisper = AudioEncoder(d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer)
        llm = LlamaForCausalLM(LlamaConfig(**LLMS[llm_name]))
    c = LlmDims.from_config(llm.config)
    assert sum(p.numel() for p in whisper.parameters()) == whisper_params(d)
    assert sum(b.numel() for b in whisper.buffers()) == whisper_buffer_elements(d)
    assert sum(p.numel() for p in llm.parameters()) == llm_params(c)
    add_lora(whisper, "whisper_lora", 2, 1, 0.05, WHISPER_LINEARS)
    add_lora(llm, "llm_lora", 2, 1, 0.05, "all-linear")
    assert trainable(whisper) == whisper_lora_params(d, 2)
    assert trainable(llm) == llm_lora_params(c, 2)
    for k in (1, 3):
        assert trainable(MLPAdaptor(d.n_audio_state, c.hidden_size, k).to("meta")) == adaptor_params(d, c, k)


def saved_bytes_after_forward(model, task, criterion, sample) -> int:
    """Bytes of the tensors autograd saved in the forward pass and still holds at its end (each
    storage once; parameters and buffers not counted). The hook keeps a detached alias: the tensor
    itself would tie an output to the node that saves it in a cycle that outlives the node's use."""
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved = {}

    def pack(t):
        alias = t.detach()
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            saved.setdefault(ptr, [t.untyped_storage().nbytes(), []])[1].append(weakref.ref(alias))
        return alias

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda alias: alias):
        loss, _, _ = criterion(model, sample)
    return sum(nbytes for nbytes, refs in saved.values() if any(r() is not None for r in refs))


@pytest.fixture(scope="module")
def gqa_models(tiny_models, tmp_path_factory):
    """The tiny Whisper and a tiny Llama with grouped-query attention (4 heads, 2 key/value heads)
    and the tiny models' tokenizer."""
    root = tmp_path_factory.mktemp("gqa")
    shutil.copy(tiny_models / "whisper.pt", root / "whisper.pt")
    shutil.copytree(tiny_models / "llm", root / "llm")
    config = LlamaConfig.from_pretrained(tiny_models / "llm")
    config.num_key_value_heads, config.intermediate_size = 2, 96
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "llm")
    return root


@pytest.mark.parametrize("flags", [[], ["--llm-dtype", "bfloat16"], ["--llm-dtype", "bfloat16", "--gradient-checkpointing"],
                                   ["--whisper-lora-dropout", "0", "--llm-lora-dropout", "0"], ["--whisper-lora-r", "0"]])
def test_saved_activations_are_what_autograd_saves(tiny_corpus, gqa_models, flags):
    """The real model (--arch llast: Whisper at 30 s, S-LoRA and L-LoRA with dropout) on 4 rows:
    the estimator's saved bytes equal autograd's, byte for byte."""
    cfg, task, model = build_task_and_model(tiny_corpus, gqa_models, "--arch", "llast", "--whisper-lora-r", "4",
                                            "--llm-lora-r", "8", *flags)
    model.train()
    sample = first_batch(task, "test")
    net = sample["net_input"]
    batch = Batch(len(net["src_lengths"]), -(-int(net["src_lengths"].max()) // SAMPLES_PER_POSITION),
                  net["prompt_before"].size(1) + net["prompt_after"].size(1), net["prev_output_tokens"].size(1))
    m = cfg.model
    recipe = Recipe(m.whisper_lora_r, m.whisper_lora_dropout, m.llm_lora_r, m.llm_lora_dropout, m.llm_dtype,
                    m.frame_stack, m.gradient_checkpointing)
    expected = activations(model.encoder.dims, LlmDims.from_config(model.decoder.llm.config), recipe, batch, "cpu")
    parts = expected["whisper"] + expected["adaptor"] + expected["llm"] + expected["head"]
    assert saved_bytes_after_forward(model, task, task.build_criterion(cfg.criterion), sample) == parts


def test_memory_command_prints_each_preset_and_the_largest_batch_that_fits(capsys):
    main(["--batch-size", "4"])
    out = capsys.readouterr().out
    for preset in PRESETS:
        assert f"{preset}: Whisper large-v2 encoder" in out
    d, c = WHISPER["large-v2"], LlmDims.from_config(LLMS["Llama-2-7b-chat-hf"])
    recipe, batch = Recipe(gradient_checkpointing=True), Batch(size=4)
    n = largest_batch(d, c, recipe, batch, 80)
    assert n > 1, "the 8B preset with checkpointing fits an 80 GB card"
    assert estimate(d, c, recipe, replace(batch, size=n))["total"] <= FIT_MARGIN * 80 * GB
    assert estimate(d, c, recipe, replace(batch, size=n + 1))["total"] > FIT_MARGIN * 80 * GB
    assert f"| largest batch on 80 GB | batch 1 (--max-tokens 1584) | batch {n} (--max-tokens {n * 1584}) |" in out
