"""llast_fairseq.evaluation and llast-evaluate's main on small manifests and fairseq-generate outputs."""
import csv
import json
import os
import statistics

import pytest
import sacrebleu

from llast_fairseq import evaluation as ev
from llast_fairseq.cli.evaluate import main

COLS = ["id", "audio", "n_frames", "tgt_text", "src_text", "src_lang", "tgt_lang", "speaker"]

# (src_lang, tgt_lang, src_text, tgt_text)
FR_EN = [
    ("fr", "en", "Le chat est assis sur le tapis rouge.", "The Cat is sitting on the red Mat."),
    ("fr", "en", "Paris est la capitale de la France.", "Paris is the capital city of France."),
    ("fr", "en", "Il fait très beau aujourd'hui à Lyon.", "The weather is very nice today in Lyon."),
]
EN_FR = [
    ("en", "fr", "The Cat is sitting on the red Mat.", "Le Chat est assis sur le Tapis rouge."),
    ("en", "fr", "Paris is the capital city of France.", "Paris est la Capitale de la France."),
    ("en", "fr", "We will meet again next Monday morning.", "Nous nous reverrons Lundi prochain au matin."),
]
DE_EN = [("de", "en", "Das Wetter ist heute sehr schön.", "The Weather is very nice today.")]
SUBSETS = {
    "test_fr_en": FR_EN,
    "test_en_fr": EN_FR,
    "test_multi": [EN_FR[0], FR_EN[0], DE_EN[0], FR_EN[1], EN_FR[2]],
}

# Hypotheses per seed: lowercased / slightly changed references, so that casing matters.
HYPS = {
    1: {
        "test_fr_en": ["the cat is sitting on the red mat .",
                       "paris is the capital city of france.",
                       "The weather is very nice today at Lyon."],
        "test_en_fr": ["le chat est assis sur le tapis rouge.",
                       "Paris est la capitale de la France.",
                       "Nous nous reverrons lundi prochain au matin."],
        "test_multi": ["le chat est assis sur le tapis rouge.",
                       "the cat is sitting on the red mat.",
                       "the weather is very nice today.",
                       "Paris is the capital of France.",
                       "Nous nous verrons lundi prochain le matin."],
    },
    2: {
        "test_fr_en": ["The cat sits on the red mat.",
                       "Paris is the capital city of France.",
                       "the weather is nice today in lyon."],
        "test_en_fr": ["Le Chat est assis sur le tapis rouge.",
                       "Paris est la capitale de France.",
                       "nous nous reverrons lundi prochain au matin."],
        "test_multi": ["Le chat est assis sur un tapis rouge.",
                       "The cat is sitting on the red Mat.",
                       "The weather is very nice today.",
                       "paris is the capital city of france.",
                       "Nous nous reverrons Lundi prochain au matin."],
    },
}


def write_manifests(data_dir, subsets=SUBSETS):
    os.makedirs(data_dir, exist_ok=True)
    for name, rows in subsets.items():
        with open(os.path.join(data_dir, name + ".tsv"), "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, COLS, delimiter="\t", quoting=csv.QUOTE_NONE,
                               lineterminator="\n", escapechar="\\")
            w.writeheader()
            for i, (sl, tl, src, tgt) in enumerate(rows):
                w.writerow({"id": f"{name}_{i}", "audio": f"clips/{name}_{i}.wav",
                            "n_frames": 16000 + i, "tgt_text": tgt, "src_text": src,
                            "src_lang": sl, "tgt_lang": tl, "speaker": "spk0"})


def write_generate(path, subset, refs, hyps, beam=5, order=None):
    """Write a file in the exact line format of fairseq_cli/generate.py (incl. log lines),
    with samples in a non-sorted (batch) order and a 2-best list."""
    order = order if order is not None else list(reversed(range(len(refs))))
    lines = ["2026-01-01 00:00:00 | INFO | fairseq_cli.generate | {'_name': None, 'common': {}}",
             "2026-01-01 00:00:01 | INFO | fairseq.tasks.llast_st | loaded 3 examples"]
    for i in order:
        lines.append(f"S-{i}\t")
        lines.append(f"T-{i}\t{refs[i]}")
        for k, hyp in enumerate([hyps[i], "zzz alternative hypothesis"]):
            score = -0.3141592653589793 - k
            lines.append(f"H-{i}\t{score}\t{hyp}")
            lines.append(f"D-{i}\t{score}\t{hyp}")
            lines.append(f"P-{i}\t" + " ".join("{:.4f}".format(-0.1) for _ in hyp.split()))
    lines.append("2026-01-01 00:00:02 | INFO | fairseq_cli.generate | NOTE: hypothesis and token "
                 "scores are output in base 2")
    lines.append(f"Generate {subset} with beam={beam}: BLEU4 = 12.34, 50.0/20.0/10.0/5.0 "
                 "(BP=1.000, ratio=1.000, syslen=10, reflen=10)")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data"
    write_manifests(str(data))
    runs = []
    for seed in (1, 2):
        res = tmp_path / f"res_seed{seed}"
        res.mkdir()
        for name, rows in SUBSETS.items():
            write_generate(str(res / f"generate-{name}.txt"), name,
                           [r[3] for r in rows], HYPS[seed][name])
        runs.append(str(res))
    return str(data), runs, tmp_path


def expected_scores(seed):
    """Direct sacrebleu scores per (subset, direction) with the intended settings."""
    out = {}
    for name, rows in SUBSETS.items():
        groups = {}
        for (sl, tl, _, tgt), hyp in zip(rows, HYPS[seed][name]):
            groups.setdefault(f"{sl}-{tl}", ([], []))
            groups[f"{sl}-{tl}"][0].append(hyp)
            groups[f"{sl}-{tl}"][1].append(tgt)
        for d, (hyps, refs) in groups.items():
            lc = d.endswith("-en")
            out[(name, d)] = {
                "n": len(hyps),
                "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a", lowercase=lc).score,
                "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
                "bleu_other_case": sacrebleu.corpus_bleu(hyps, [refs], lowercase=not lc).score,
            }
    return out


def test_read_generate_output(setup):
    data, runs, _ = setup
    rows = ev.read_generate_output(os.path.join(runs[0], "generate-test_multi.txt"))
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[2] == (2, DE_EN[0][3], HYPS[1]["test_multi"][2])  # 1-best D- line, not the 2nd


def test_bleu_per_direction_matches_sacrebleu(setup):
    data, runs, _ = setup
    got = ev.evaluate_run(data, runs[0])
    exp = expected_scores(1)
    assert set(got) == set(exp)
    assert ("test_multi", "de-en") in got and ("test_multi", "en-fr") in got
    for k, e in exp.items():
        assert got[k]["n"] == e["n"]
        assert got[k]["bleu"] == pytest.approx(e["bleu"], abs=1e-9), k
        assert got[k]["chrf"] == pytest.approx(e["chrf"], abs=1e-9), k
        # the data is built so that the wrong casing setting gives a different score
        assert abs(got[k]["bleu"] - e["bleu_other_case"]) > 1.0, k
    assert "lc" in got[("test_fr_en", "fr-en")]["bleu_signature"]
    assert "mixed" in got[("test_en_fr", "en-fr")]["bleu_signature"]


def test_bleu_settings():
    assert ev.bleu_settings("en") == ev.bleu_settings("en_us") == {"tokenize": "13a", "lowercase": True}
    assert ev.bleu_settings("fr") == {"tokenize": "13a", "lowercase": False}
    assert ev.bleu_settings("zh-CN") == ev.bleu_settings("cmn_hans_cn") == {"tokenize": "zh", "lowercase": False}
    assert ev.bleu_settings("ja") == ev.bleu_settings("ja_jp") == {"tokenize": "ja-mecab", "lowercase": False}


def test_mean_std_over_seeds_cli_and_json(setup, capsys):
    data, runs, tmp = setup
    out_json = str(tmp / "scores.json")
    assert main(["--data", data, *runs, "--json", out_json]) == 0
    table = capsys.readouterr().out
    e1, e2 = expected_scores(1), expected_scores(2)
    res = json.load(open(out_json))
    assert res["st_runs"] == runs
    by_key = {(r["subset"], r["direction"]): r for r in res["results"]}
    assert set(by_key) == set(e1)
    for k in e1:
        for m in ("bleu", "chrf"):
            vals = [e1[k][m], e2[k][m]]
            r = by_key[k][m]
            assert r["values"] == pytest.approx(vals)
            assert r["mean"] == pytest.approx(statistics.mean(vals))
            assert r["std"] == pytest.approx(statistics.stdev(vals))  # sample std (ddof=1)
        line = next(ln for ln in table.splitlines() if ln.split()[:2] == list(k))
        m, s = statistics.mean([e1[k]["bleu"], e2[k]["bleu"]]), statistics.stdev(
            [e1[k]["bleu"], e2[k]["bleu"]])
        assert f"{m:.2f}±{s:.2f}" in line
    assert table.splitlines()[0].split() == ["subset", "direction", "n", "runs", "BLEU",
                                             "chrF", "WER%"]


def test_single_run_has_no_std(setup, capsys):
    data, runs, _ = setup
    assert main(["--data", data, runs[0]]) == 0
    assert "±" not in capsys.readouterr().out


def test_wer_hand_checked():
    ref = "The cat, sat on the mat today. OK!"  # 8 words after normalisation
    hyp = "the dog sat on the mat today"  # 1 substitution (cat->dog) + 1 deletion (ok)
    assert ev.wer([ref], [hyp]) == 0.25
    assert ev.wer(["a b c d", "e f"], ["a x c d", "e f g"]) == pytest.approx(2 / 6)  # corpus level
    assert ev.normalize_words("L'homme, c'est «moi»!") == ["l", "homme", "c", "est", "moi"]


def test_asr_runs(setup, capsys):
    data, _, tmp = setup
    asr = tmp / "asr_seed1"
    asr.mkdir()
    rows = SUBSETS["test_multi"]
    hyps = [r[2].lower() for r in rows]
    hyps[1] = "le chien est assis sur le tapis rouge"  # 1 sub; fr rows have 8 + 7 words
    write_generate(str(asr / "generate-test_multi.txt"), "test_multi", [r[2] for r in rows], hyps)
    got = ev.evaluate_run(data, str(asr), asr=True)
    assert set(got) == {("test_multi", "en"), ("test_multi", "fr"), ("test_multi", "de")}
    assert got[("test_multi", "fr")] == {"n": 2, "wer": pytest.approx(100 * 1 / 15)}
    assert got[("test_multi", "en")]["wer"] == 0.0
    assert main(["--data", data, "--asr", str(asr)]) == 0
    assert "asr:fr" in capsys.readouterr().out
    # ST results passed as --asr (references are translations) is caught
    st = tmp / "res_seed1"
    with pytest.raises(ev.EvalError, match="src_text"):
        ev.evaluate_run(data, str(st), asr=True)


def test_reference_mismatch_names_file_and_row(setup, tmp_path):
    data, runs, _ = setup
    bad = tmp_path / "bad"
    bad.mkdir()
    refs = [r[3] for r in FR_EN]
    refs[2] = "Something else entirely."
    path = str(bad / "generate-test_fr_en.txt")
    write_generate(path, "test_fr_en", refs, HYPS[1]["test_fr_en"])
    with pytest.raises(ev.EvalError) as ei:
        ev.evaluate_run(data, str(bad))
    assert path in str(ei.value) and "row 2" in str(ei.value)
    # whitespace differences alone are tolerated
    refs[2] = "  " + FR_EN[2][3].replace(" ", "  ")
    write_generate(path, "test_fr_en", refs, HYPS[1]["test_fr_en"])
    ev.evaluate_run(data, str(bad))


def test_wrong_data_dir_row_out_of_range(setup, tmp_path):
    data, runs, _ = setup
    small = tmp_path / "small"
    write_manifests(str(small), {**SUBSETS, "test_multi": SUBSETS["test_multi"][:2]})
    with pytest.raises(ev.EvalError, match=r"generate-test_multi\.txt: row 2 does not exist"):
        ev.evaluate_run(str(small), runs[0])


def test_missing_generate_file_and_unknown_subset(setup, tmp_path, capsys):
    data, runs, _ = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ev.EvalError, match="no generate-<subset>.txt file in"):
        ev.evaluate_run(data, str(empty))
    with pytest.raises(ev.EvalError, match="results dir not found"):
        ev.evaluate_run(data, str(tmp_path / "nope"))
    unk = tmp_path / "unk"
    unk.mkdir()
    write_generate(str(unk / "generate-test_xx_yy.txt"), "test_xx_yy", ["a"], ["a"])
    with pytest.raises(ev.EvalError, match=r"unknown subset 'test_xx_yy'.*test_xx_yy\.tsv"):
        ev.evaluate_run(data, str(unk))
    # the CLI reports errors on stderr with exit status 1
    assert main(["--data", data, str(unk)]) == 1
    assert "unknown subset 'test_xx_yy'" in capsys.readouterr().err


def test_runs_with_different_subsets_are_rejected(setup):
    data, runs, _ = setup
    os.remove(os.path.join(runs[1], "generate-test_en_fr.txt"))
    with pytest.raises(ev.EvalError, match="same subsets"):
        ev.aggregate([ev.evaluate_run(data, r) for r in runs], runs)


def test_comma_joined_subset_is_its_manifests_in_turn(setup):
    data = setup[0]
    rows = ev.load_manifest(str(data), "test_fr_en,test_en_fr")
    assert rows == ev.load_manifest(str(data), "test_fr_en") + ev.load_manifest(str(data), "test_en_fr")
    with pytest.raises(ev.EvalError, match="nope"):
        ev.load_manifest(str(data), "test_fr_en,nope")


# zh and ja: real sentences, scored with the tokenizers LLaST uses (zh, ja-mecab), not 13a
CJK = {
    "test_en_zh": [("en", "zh-CN", "The weather is very nice today.", "今天天气很好。"),
                   ("en", "zh-CN", "I like to drink green tea in the morning.", "我喜欢早上喝绿茶。"),
                   ("en", "zh-CN", "My brother works in Shanghai.", "我的哥哥在上海工作。")],
    "test_en_ja": [("en", "ja", "It is sunny today.", "今日は晴れです。"),
                   ("en", "ja", "I am reading a book in the library.", "私は図書館で本を読んでいます。"),
                   ("en", "ja", "The train leaves at seven.", "電車は七時に出発します。")],
}
CJK_HYPS = {
    "test_en_zh": ["今天天气不错。", "我喜欢早上喝茶。", "我哥哥在上海工作。"],
    "test_en_ja": ["今日は晴れている。", "私は図書館で本を読む。", "電車は七時に出ます。"],
}


@pytest.mark.parametrize("subset,tokenize", [("test_en_zh", "zh"), ("test_en_ja", "ja-mecab")])
def test_zh_and_ja_are_scored_with_their_tokenizers(tmp_path, subset, tokenize):
    data, res = tmp_path / "data", tmp_path / "res"
    write_manifests(str(data), CJK)
    res.mkdir()
    refs, hyps = [r[3] for r in CJK[subset]], CJK_HYPS[subset]
    write_generate(str(res / f"generate-{subset}.txt"), subset, refs, hyps)
    got = ev.evaluate_run(str(data), str(res))[(subset, CJK[subset][0][0] + "-" + CJK[subset][0][1])]
    expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
    assert got["bleu"] == pytest.approx(expected, abs=1e-9)
    assert 10 < got["bleu"] < 100
    assert abs(got["bleu"] - sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score) > 10
    assert f"tok:{tokenize}" in got["bleu_signature"]


def test_mixed_languages_sum_each_sentences_statistics_under_its_own_settings():
    """--eval-bleu's statistics: per sentence, the settings of its target language."""
    hyps = ["the cat is on the mat .", "Le chat est sur le tapis.", "今天天气不错。", "paris is in france."]
    refs = ["The Cat is on the Mat.", "le Chat est sur le Tapis.", "今天天气很好。", "Paris is in France."]
    langs = ["en", "fr", "zh-CN", "en"]
    explicit = {"en": dict(tokenize="13a", lowercase=True), "fr": dict(tokenize="13a", lowercase=False),
                "zh-CN": dict(tokenize="zh", lowercase=False)}
    expected = dict.fromkeys(ev.BLEU_STATISTICS, 0)
    for h, r, lang in zip(hyps, refs, langs):
        s = sacrebleu.BLEU(**explicit[lang]).corpus_score([h], [[r]])
        expected["sys_len"] += s.sys_len
        expected["ref_len"] += s.ref_len
        for n in range(4):
            expected[f"counts_{n}"] += s.counts[n]
            expected[f"totals_{n}"] += s.totals[n]
    stats = ev.bleu_statistics(hyps, refs, langs)
    assert stats == expected
    assert all(type(v) is int for v in stats.values())  # fairseq's meters keep plain numbers
    cased = ev.bleu_statistics(hyps, refs, ["fr"] * 4)  # one setting for all: a different count
    assert cased["counts_0"] < stats["counts_0"]
    # one language: the corpus BLEU is sacrebleu's
    en = [0, 3]
    one = ev.bleu_statistics([hyps[i] for i in en], [refs[i] for i in en], ["en", "en"])
    assert ev.bleu_from_statistics(one) == pytest.approx(
        sacrebleu.corpus_bleu([hyps[i] for i in en], [[refs[i] for i in en]], lowercase=True).score)


@pytest.mark.parametrize("lang", ["en", "fr", "zh-CN", "ja"])
def test_fairseq_generate_scorer_with_the_matching_flags_gives_the_same_bleu(lang):
    """fairseq-generate --scoring sacrebleu with --sacrebleu-tokenizer/--sacrebleu-lowercase set to
    bleu_settings(lang) scores as evaluation does (fairseq lowercases after tokenizing)."""
    from fairseq.scoring.bleu import SacrebleuConfig, SacrebleuScorer

    rows = {"en": FR_EN, "fr": EN_FR, "zh-CN": CJK["test_en_zh"], "ja": CJK["test_en_ja"]}[lang]
    refs = [r[3] for r in rows]
    hyps = {"en": HYPS[1]["test_fr_en"], "fr": HYPS[1]["test_en_fr"], "zh-CN": CJK_HYPS["test_en_zh"],
            "ja": CJK_HYPS["test_en_ja"]}[lang]
    settings = ev.bleu_settings(lang)
    scorer = SacrebleuScorer(SacrebleuConfig(sacrebleu_tokenizer=settings["tokenize"],
                                             sacrebleu_lowercase=settings["lowercase"]))
    for ref, hyp in zip(refs, hyps):
        scorer.add_string(ref, hyp)
    assert scorer.score() == pytest.approx(ev.score_translations(hyps, refs, lang)["bleu"], abs=1e-9)
