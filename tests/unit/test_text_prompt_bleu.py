"""llast_fairseq.text_prompt_bleu: an LLM's text translation in LLaST's prompt, scored like llast-evaluate."""
import re
import subprocess

import pytest
import sacrebleu
import torch
from conftest import PAIRS, REPO
from transformers import AutoModelForCausalLM, AutoTokenizer

from llast_fairseq.cli.text_prompt_bleu import main
from llast_fairseq.evaluation import EvalError
from llast_fairseq.text_prompt_bleu import text_prompt_bleu


def test_greedy_translation_of_the_text_prompt_scored_with_the_direction_settings(tiny_models):
    rows = [dict(src_text=s, tgt_text=t, src_lang=sl, tgt_lang=tl) for s, t, sl, tl in PAIRS if sl == "fr"]
    bleu, hyps = text_prompt_bleu(str(tiny_models / "llm"), rows, max_new_tokens=6)
    # the prompt, written out independently: Llama-2 chat with the source text where audio goes
    tok = AutoTokenizer.from_pretrained(tiny_models / "llm")
    llm = AutoModelForCausalLM.from_pretrained(tiny_models / "llm").eval()
    text = f"[INST] {rows[0]['src_text']}\nPlease translate the French sentence into English. [/INST]"
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    out = llm.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    assert hyps[0] == tok.decode(out[0, len(ids):], skip_special_tokens=True).strip() != ""
    assert len(hyps) == len(rows)
    assert bleu == sacrebleu.corpus_bleu(hyps, [[r["tgt_text"] for r in rows]], lowercase=True).score


def test_rows_of_several_directions_are_refused(tiny_models, tiny_corpus, capsys):
    rows = [dict(src_text=s, tgt_text=t, src_lang=sl, tgt_lang=tl) for s, t, sl, tl in PAIRS]
    with pytest.raises(EvalError, match="directions"):
        text_prompt_bleu(str(tiny_models / "llm"), rows)
    assert main(["--llm", str(tiny_models / "llm"), "--data", str(tiny_corpus), "--subset", "test"]) == 1
    assert "pass a manifest of one direction" in capsys.readouterr().err


def test_installed_command_prints_the_measure_of_the_first_rows(tiny_models, tiny_corpus):
    proc = subprocess.run([REPO / ".venv" / "bin" / "llast-text-prompt-bleu", "--llm", tiny_models / "llm",
                           "--data", tiny_corpus, "--subset", "test_fr_en", "--rows", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [dict(src_text=s, tgt_text=t, src_lang=sl, tgt_lang=tl) for s, t, sl, tl in PAIRS if sl == "fr"][:3]
    bleu, hyps = text_prompt_bleu(str(tiny_models / "llm"), rows)
    shown = re.findall(r"^  hyp: (.*)$", proc.stdout, flags=re.M)
    assert shown == hyps  # the first three rows' hypotheses, as the library decodes them
    assert f"text-prompt BLEU on 3 rows of test_fr_en: {bleu:.2f}" in proc.stdout
