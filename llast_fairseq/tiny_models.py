"""Tiny random-init models saved in the real formats, for tests and the demo.

- an openai-whisper checkpoint (``dims`` + ``model_state_dict``), loadable by ``whisper.load_model``;
- a local Hugging Face Llama directory (config, safetensors weights) with a Llama-2-style
  SentencePiece tokenizer (byte fallback, <unk>=0 <s>=1 </s>=2, no pad) trained on given text.

They load through exactly the code path a user's real checkpoint takes.

    llast-make-tiny-models --text corpus.txt --out models/
"""
import json
import os
import tempfile
from typing import Iterable

import sentencepiece as spm
import torch
import whisper.model
from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

from .models.whisper_weights import save_whisper_checkpoint


def make_tiny_whisper(path: str, n_mels: int = 80, n_state: int = 64, n_head: int = 2,
                      n_layer: int = 2, seed: int = 0) -> str:
    """Random-init Whisper (full model, tiny text side) written as an openai-whisper checkpoint."""
    dims = dict(n_mels=n_mels, n_audio_ctx=1500, n_audio_state=n_state, n_audio_head=n_head,
                n_audio_layer=n_layer, n_vocab=51865, n_text_ctx=448, n_text_state=n_state,
                n_text_head=n_head, n_text_layer=1)
    torch.manual_seed(seed)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    save_whisper_checkpoint(path, dims, model.state_dict())
    return path


def make_tiny_llm(out_dir: str, texts: Iterable[str], vocab_size: int = 512, hidden: int = 64,
                  layers: int = 2, heads: int = 4, seed: int = 0, init_std: float = 0.2,
                  intermediate: int = 0, lm_head_rows: int = 0) -> str:
    """Random-init Llama + SentencePiece tokenizer trained on ``texts``, saved with save_pretrained.

    ``init_std`` 0.2 rather than Llama's 0.02: behind the final RMSNorm a frozen random LM head
    with 0.02 weights caps every logit near 1, so LoRA alone could fit nothing (loss 8.3 -> 7.5
    in 40 updates; with 0.2: 8.3 -> 1.5). A pretrained LLM's head has no such cap.
    ``intermediate``: the MLP width (0: ``4 * hidden``). ``lm_head_rows``: rows of the embedding
    and LM head (0: the tokenizer's size; more leaves spare rows, as Qwen2 and padded vocabularies do).
    """
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "tokenizer")  # tokenizer.model, as Llama ships it
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)), model_prefix=prefix, vocab_size=vocab_size,
            model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1,
            eos_id=2, pad_id=-1, hard_vocab_limit=False, num_threads=1,
            minloglevel=2,
        )
        tokenizer = LlamaTokenizer.from_pretrained(tmp, legacy=False)
        tokenizer.save_pretrained(out_dir)
    config = LlamaConfig(
        vocab_size=max(len(tokenizer), lm_head_rows), hidden_size=hidden, intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


QWEN2_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_qwen2(out_dir: str, texts: Iterable[str], vocab_size: int = 400, hidden: int = 64,
                    layers: int = 2, heads: int = 4, seed: int = 0) -> str:
    """Random-init Qwen2 with a byte-level BPE tokenizer like Qwen2's: no unk token, EOS
    ``<|im_end|>``, pad ``<|endoftext|>`` and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(list(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=QWEN2_CHAT_TEMPLATE)
    tokenizer.save_pretrained(out_dir)
    config_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(config_path) as f:
        tokenizer_config = json.load(f)
    tokenizer_config["unk_token"] = None  # as Qwen2 ships it (else Qwen2Tokenizer defaults one)
    with open(config_path, "w") as f:
        json.dump(tokenizer_config, f, indent=1)
    config = Qwen2Config(
        vocab_size=len(tokenizer) + 7, hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
        max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True, initializer_range=0.2,
    )  # Qwen2's LM head is wider than its tokenizer: spare rows get placeholder symbols
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
    return out_dir
