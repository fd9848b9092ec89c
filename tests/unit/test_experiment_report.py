"""The experiment report in-process: aggregation over seeds, the paired significance test, the
log parsers and the Markdown table, on numbers made here (tests/integration/test_experiment.py
checks a real grid's report against its cells' outputs)."""
import statistics

import pytest
import sacrebleu

from llast_fairseq.evaluation import EvalError
from llast_fairseq.experiments.report import (aggregate_rows, dev_curve, generate_seconds, markdown,
                                              paired_bootstrap, trained_params)


def cell(variant, seed, bleu, chrf, wer, params=1000, train=60.0, cascade_bleu=None):
    scores = {"variant": variant, "seed": seed, "cell_seconds": 1.0, "trained_params": params,
              "train_seconds": train, "dev": [{"subset": "dev", "update": u, "loss": 5.0 - seed - u / 100,
                                                "bleu": 10.0 * seed + u} for u in (10, 20)],
              "e2e": {"t": {"directions": {"fr-en": {"n": 3, "bleu": bleu, "chrf": chrf}},
                            "time": {"utterances": 3, "seconds": 1.5 * seed}},
                      "asr": {"directions": {"fr": {"n": 3, "wer": wer}}, "time": {"utterances": 3, "seconds": 0.3}}},
              "cascade": {}}
    if cascade_bleu is not None:
        scores["cascade"] = {"t": {"directions": {"fr-en": {"n": 3, "bleu": cascade_bleu, "chrf": 1.0}},
                                   "time": {"utterances": 3, "seconds": 6.0, "e2e_seconds": 2.0 * seed}}}
    return scores


CELLS = [cell("a", 1, 30.0, 50.0, 10.0, cascade_bleu=20.0), cell("a", 2, 34.0, 53.0, 14.0, cascade_bleu=26.0),
         cell("a", 3, 35.0, 51.0, 12.0, cascade_bleu=21.0), cell("b", 1, 40.0, 60.0, 8.0, params=5000, train=90.0)]


def test_rows_hold_mean_and_sample_sd_over_seeds():
    rows = aggregate_rows(CELLS, ["a", "b"])
    assert [(r["variant"], r["decoding"], r["seeds"]) for r in rows] == [
        ("a", "e2e", [1, 2, 3]), ("a", "cascade", [1, 2, 3]), ("b", "e2e", [1])]
    a, a_cascade, b = rows
    bleu = a["tests"]["t"]["fr-en"]["bleu"]
    assert bleu["values"] == [30.0, 34.0, 35.0] and bleu["n"] == 3
    assert bleu["mean"] == pytest.approx(33.0) and bleu["sd"] == pytest.approx(statistics.stdev([30, 34, 35]))
    assert a["tests"]["t"]["fr-en"]["chrf"]["mean"] == pytest.approx(154 / 3)
    assert a["tests"]["asr"]["fr"]["wer"]["mean"] == pytest.approx(12.0) and a["tests"]["asr"]["fr"]["n"] == 3
    assert a["trained_params"] == 1000 and a["train_seconds"]["mean"] == 60.0
    assert a["seconds_per_utterance"]["t"]["values"] == [0.5, 1.0, 1.5]
    assert a_cascade["tests"]["t"]["fr-en"]["bleu"]["mean"] == pytest.approx(67 / 3)
    assert a_cascade["seconds_per_utterance"]["t"]["mean"] == pytest.approx(2.0)
    assert a_cascade["times_end_to_end"]["t"]["values"] == pytest.approx([3.0, 1.5, 1.0])
    assert b["tests"]["t"]["fr-en"]["bleu"]["sd"] is None  # one run: no sd
    assert a["dev"] == [{"subset": "dev", "update": u, "loss": pytest.approx(5.0 - 2 - u / 100),
                         "bleu": pytest.approx(20.0 + u)} for u in (10, 20)]


def test_rows_refuse_seeds_that_do_not_match():
    with pytest.raises(EvalError, match="different numbers of parameters"):
        aggregate_rows([CELLS[0], cell("a", 2, 1, 1, 1, params=7)], ["a"])
    other = cell("a", 2, 1, 1, 1)
    other["e2e"]["t"]["directions"]["fr-en"]["n"] = 2
    with pytest.raises(EvalError, match="different numbers of sentences"):
        aggregate_rows([CELLS[0], other], ["a"])


REFS = [f"the {w} cat sat on the mat number {i} today" for i, w in enumerate(["black", "white", "old", "small"] * 12)]


def test_paired_bootstrap():
    good = list(REFS)
    bad = [r.replace("cat sat on", "dog ran to") for r in REFS]
    result = paired_bootstrap(bad, good, REFS, "en", samples=200)
    assert result["bleu_a"] == pytest.approx(sacrebleu.BLEU(lowercase=True).corpus_score(bad, [REFS]).score)
    assert result["bleu_b"] == pytest.approx(100.0)
    assert result["p"] == pytest.approx(1 / 201)  # never by chance in 200 resamples
    one_off = list(REFS)
    one_off[0] = "a wholly different sentence"
    assert paired_bootstrap(good, one_off, REFS, "en", samples=200)["p"] > 0.2  # one sentence in 48
    # equal BLEU (identical outputs; for ->en, outputs differing in case only): no evidence, p = 1
    assert paired_bootstrap(bad, bad, REFS, "en", samples=200)["p"] == 1.0
    assert paired_bootstrap(good, [r.upper() for r in good], REFS, "en", samples=200)["p"] == 1.0
    assert paired_bootstrap(good, [r.upper() for r in good], REFS, "fr", samples=200)["p"] < 0.01  # cased
    with pytest.raises(EvalError, match="47 references"):
        paired_bootstrap(good, good, REFS[1:], "en")


def test_log_parsers(tmp_path):
    log = "\n".join([
        "2026-01-01 10:00:00 | INFO | fairseq_cli.train | num. shared model params: 10,886,656 (num. trained: 3,254,272)",
        '2026-01-01 10:00:01 | INFO | train_inner | {"epoch": 1, "loss": "3.1", "num_updates": "100"}',
        '2026-01-01 10:00:02 | INFO | dev_fr_en | {"epoch": 1, "dev_fr_en_loss": "3.096", "dev_fr_en_bleu": "1.42", "dev_fr_en_num_updates": "100"}',
        '2026-01-01 10:00:03 | INFO | train | {"epoch": 1, "train_loss": "3.0", "train_num_updates": "120"}',
        "# llast-experiment: resumed",
        "2026-01-01 11:00:00 | INFO | fairseq_cli.train | num. shared model params: 10,886,656 (num. trained: 3,254,273)",
        '2026-01-01 11:00:02 | INFO | dev_fr_en | {"epoch": 1, "dev_fr_en_loss": "3.0", "dev_fr_en_bleu": "2.5", "dev_fr_en_num_updates": "100"}',
        '2026-01-01 11:00:04 | INFO | dev_fr_en | {"epoch": 2, "dev_fr_en_loss": "2.9", "dev_fr_en_num_updates": "200"}',
    ])
    assert trained_params(log, "x") == 3254273  # the last attempt's
    assert dev_curve(log) == [{"subset": "dev_fr_en", "update": 100, "loss": 3.0, "bleu": 2.5},
                              {"subset": "dev_fr_en", "update": 200, "loss": 2.9}]
    with pytest.raises(EvalError, match="x: no 'num. trained' line"):
        trained_params("nothing", "x")
    gen = tmp_path / "generate-t.log"
    gen.write_text("INFO:fairseq_cli.generate:Translated 1,200 sentences (36 tokens) in 0.5s (1.0 sentences/s)\n")
    assert generate_seconds(gen) == {"utterances": 1200, "seconds": 0.5}


def test_markdown_table():
    rows = aggregate_rows(CELLS, ["a", "b"])
    report = {"rows": rows, "cells_missing": ["b seed 2"], "bootstrap_samples": 200, "significance": [
        {"a": "a", "a_decoding": "e2e", "b": "b", "b_decoding": "e2e", "test": "t", "direction": "fr-en",
         "seeds": [1], "bleu_a": [30.0], "bleu_b": [40.0], "p": [0.004975]}]}
    text = markdown(report, "grid.yaml")
    assert "Not done yet (left out): b seed 2." in text
    assert "| a | end-to-end | 3 | 1,000 | 60 s | 33.00 ± 2.65 |" in text
    assert "| a | cascade | 3 | 1,000 | 60 s | 22.33 ± 3.21 |" in text
    assert "| b | end-to-end | 1 | 5,000 | 90 s | 40.00 |" in text
    assert "| a | end-to-end | 3 | 12.00 ± 2.00 |" in text  # WER
    assert "| a | cascade | 3 | - | 2.000 ± 0.000 (1.83 ± 1.04x) |" in text  # tests sorted: asr, t
    assert "| a (end-to-end) | b (end-to-end) | t | fr-en | 1 | 30.00 | 40.00 | +10.00 | 0.005 |" in text
