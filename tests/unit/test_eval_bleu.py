"""--eval-bleu: every validation example is scored with its own target language's BLEU settings,
and the logged meters stay plain numbers (checkpoints keep them and load with weights_only)."""
import io

import pytest
import sacrebleu
import torch
from conftest import PAIRS, build_task_and_model
from fairseq import metrics, utils

# what evaluation.bleu_settings should say, written out: LLaST lowercases X->en only
EXPLICIT = {"en": dict(tokenize="13a", lowercase=True), "fr": dict(tokenize="13a", lowercase=False),
            "de": dict(tokenize="13a", lowercase=False)}


def lowercased_references(task, sample):
    """In place of beam search: each example's reference, lowercased, as the generator returns it."""
    detok, d = task.build_bpe(None), task.target_dictionary
    hypos = []
    for target in sample["target"]:
        text = detok.decode(d.string(utils.strip_pad(target, d.pad())))
        ids = task.tokenizer(text.lower(), add_special_tokens=False)["input_ids"] + [d.eos()]
        hypos.append([{"tokens": torch.tensor(ids)}])
    return hypos


@pytest.mark.parametrize("eval_task", ["st", "asr"])
def test_each_example_is_scored_with_its_target_languages_settings(tiny_corpus, tiny_models, monkeypatch,
                                                                   eval_task):
    cfg, task, model = build_task_and_model(tiny_corpus, tiny_models, "--eval-bleu", "--eval-task", eval_task)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("test")
    dataset = task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    # a transcript is in the source language, a translation in the target language
    langs = [src_lang if eval_task == "asr" else tgt_lang for _, _, src_lang, tgt_lang in PAIRS]
    assert sample["target_lang"] == langs
    monkeypatch.setattr(task, "inference_step", lambda generator, models, sample: lowercased_references(task, sample))
    model.eval()
    with torch.no_grad():
        _, _, log = task.valid_step(sample, model, criterion)

    refs = [src if eval_task == "asr" else tgt for src, tgt, _, _ in PAIRS]
    expected = {"sys_len": 0, "ref_len": 0, **{f"{k}_{n}": 0 for k in ("counts", "totals") for n in range(4)}}
    for ref, lang in zip(refs, langs):
        s = sacrebleu.BLEU(**EXPLICIT[lang]).corpus_score([ref.lower()], [[ref]])
        expected["sys_len"] += s.sys_len
        expected["ref_len"] += s.ref_len
        for n in range(4):
            expected[f"counts_{n}"] += s.counts[n]
            expected[f"totals_{n}"] += s.totals[n]
    assert {k[len("_bleu_"):]: v for k, v in log.items() if k.startswith("_bleu_")} == expected
    # lowercased hypotheses are perfect for English references only, and English is not alone
    assert 0 < expected["counts_0"] < expected["totals_0"]

    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics([log, log], criterion)
        bleu = agg.get_smoothed_values()["bleu"]
    state = agg.state_dict()  # what a checkpoint keeps of each aggregator (metrics.state_dict())
    doubled = {k: 2 * v for k, v in expected.items()}
    assert bleu == round(sacrebleu.BLEU.compute_bleu(
        [doubled[f"counts_{n}"] for n in range(4)], [doubled[f"totals_{n}"] for n in range(4)],
        doubled["sys_len"], doubled["ref_len"], smooth_method="exp").score, 2)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)  # what fairseq's checkpoint loader does under torch 2.13
