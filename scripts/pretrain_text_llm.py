#!/usr/bin/env python
"""Pretrain a small LLM on the text of training manifests, standing in for a pretrained LLM.

LLaST starts from an instruction-following LLM that already translates text; speech training then
teaches it to read audio. No such model can be had offline, so the demo makes one: each training
row becomes two text prompts in the same template LLaST uses, with the source *text* where the
audio goes ("[INST] Le chat dort.\\nPlease translate the French sentence into English. [/INST]"
-> "The cat sleeps.", and the transcription prompt -> the source text). The loss covers the answer
only. Only train manifests are read, so no dev or test sentence is seen.

    python scripts/pretrain_text_llm.py --data CORPUS --split train --llm DIR --epochs 3
"""
import argparse
import math
import random
import time

import torch
from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator
from transformers import AutoModelForCausalLM, AutoTokenizer

from llast_fairseq.data.prompts import PromptBuilder


def text_examples(tokenizer, rows, template: str = "llama2"):
    """(input ids, number of prompt ids) per row and task; the source text stands in for audio."""
    prompts = PromptBuilder(tokenizer, template)
    examples = []
    for row in rows:
        src, tgt = row["src_lang"], row["tgt_lang"]
        for task, lang, answer in (("st", tgt, row["tgt_text"]), ("asr", src, row["src_text"])):
            prompt = prompts.ids_with_text(task, src, lang, row["src_text"])
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            examples.append((prompt + answer_ids, len(prompt)))
    return examples


def batches(examples, batch_size: int, pad_id: int, rng: random.Random):
    """Shuffled batches of similar length: ``(input_ids, attention_mask, labels)``."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][0]), rng.random()))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    for chunk in chunks:
        width = max(len(examples[i][0]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), -100)
        for row, i in enumerate(chunk):
            seq, n_prompt = examples[i]
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, n_prompt:len(seq)] = torch.tensor(seq[n_prompt:])
        lengths = torch.tensor([len(examples[i][0]) for i in chunk])
        yield ids, torch.arange(width)[None] < lengths[:, None], labels


def pretrain(llm_dir: str, rows, epochs: float, batch_size: int = 64, lr: float = 3e-3, seed: int = 1,
             log=print):
    """Train the causal LM at ``llm_dir`` on ``rows``' text and save it back there."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(llm_dir, local_files_only=True, dtype=torch.float32)
    examples = text_examples(tokenizer, rows)
    steps = math.ceil(epochs * math.ceil(len(examples) / batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = max(1, steps // 30)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))))
    model.train()
    step, start, pad = 0, time.time(), tokenizer.eos_token_id
    while step < steps:
        for ids, mask, labels in batches(examples, batch_size, pad, rng):
            loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 100 == 0 or step == steps:
                log(f"text pretraining step {step}/{steps}  loss {loss.item():.3f}  {time.time() - start:.0f} s")
            if step == steps:
                break
    model.save_pretrained(llm_dir)
    return loss.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="manifest root")
    parser.add_argument("--split", default="train", help="train manifest(s), comma-separated")
    parser.add_argument("--llm", required=True, help="local HF causal-LM directory, updated in place")
    parser.add_argument("--epochs", type=float, default=3.0, help="passes over the text examples")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine schedule)")
    args = parser.parse_args()
    if not args.split.startswith("train"):
        parser.error("--split must be train manifests: dev and test text must stay unseen")
    rows = [r for name in args.split.split(",")
            for r in SpeechToTextDatasetCreator._load_samples_from_tsv(args.data, name)]
    pretrain(args.llm, rows, args.epochs, args.batch_size, args.lr)


if __name__ == "__main__":
    main()
