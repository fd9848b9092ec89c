#!/usr/bin/env python
"""Speed of --autocast-bf16 against float32, in one process, on real batches of a corpus.

    python scripts/bench_autocast.py FAIRSEQ-TRAIN-ARGS...
    eval .venv/bin/python scripts/bench_autocast.py $(cut -d" " -f2- work_dirs/demo-default/train.cmd)

takes the arguments of a fairseq-train command (the second form: the demo's, after `make demo`),
builds the model twice from the same seed, without and with ``--autocast-bf16``, and times on the
same training batches: the encoder's pass, Whisper and adaptor (what the first epoch pays per
batch), and a training step (forward, backward, Adam) with Whisper's states from
--cache-whisper-states, as in later epochs. It prints seconds per batch and the float32 / bf16
ratios. Where the CPU has no native bf16 (the probe of llast_fairseq.models.autocast finds bf16
slower) the model runs float32 either way, so it says so and stops.
"""
import sys
import time

import torch
from fairseq import options, tasks, utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

BATCHES = 20


def build(argv):
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(cfg.common.seed)
    model = task.build_model(cfg.model)
    return cfg, task, model, task.build_criterion(cfg.criterion)


def measure(argv):
    cfg, task, model, criterion = build(argv)
    task.load_dataset(cfg.dataset.train_subset)
    batches = task.get_batch_iterator(
        task.dataset(cfg.dataset.train_subset), max_sentences=cfg.dataset.batch_size, seed=1,
    ).next_epoch_itr(shuffle=True)
    batches = [next(batches) for _ in range(BATCHES)]
    model.eval()  # the encoder runs Whisper: in eval mode it neither reads nor fills the cache
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            model.encoder(**batch["net_input"])
    encoder = (time.perf_counter() - start) / BATCHES
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    steps = []
    for batch in batches * 2:  # the first pass fills the Whisper-state cache and warms up
        start = time.perf_counter()
        loss, _, _ = criterion(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps.append(time.perf_counter() - start)
    return encoder, sum(steps[BATCHES:]) / BATCHES


def main():
    from llast_fairseq.models.autocast import MIN_SPEEDUP, cpu_bf16_speedup, cpu_name

    if cpu_bf16_speedup() < MIN_SPEEDUP:
        sys.exit(f"bf16 matrix products run {1 / cpu_bf16_speedup():.0f}x slower than float32 on this "
                 f"CPU ({cpu_name()}): --autocast-bf16 runs float32 here, nothing to compare")
    argv = [a for a in sys.argv[1:] if a not in ("--autocast-bf16", "--cache-whisper-states")]
    argv.append("--cache-whisper-states")
    fp32 = measure(argv)
    bf16 = measure(argv + ["--autocast-bf16"])
    print(f"{'':26}{'float32':>10}{'bf16':>10}{'ratio':>8}")
    for name, a, b in zip(["encoder pass (s/batch)", "training step (s/batch)"], fp32, bf16):
        print(f"{name:26}{a:10.3f}{b:10.3f}{a / b:7.2f}x")


if __name__ == "__main__":
    main()
