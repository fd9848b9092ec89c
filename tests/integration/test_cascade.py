"""LlastTranslator.cascade on a checkpoint trained by the real fairseq-train: the model's own ASR,
then a text prompt holding that transcript, decoded by the same beam search with no audio.

The reference translation is decoded here from prompt ids built independently (the template text
written out, the transcript in it, tokenized with the plain HF tokenizer) and a net_input assembled
by hand, so the test fails if the transcript is not what the cascade's second step reads.
"""
import os
import shutil
import subprocess

import pytest
import torch
from conftest import PAIRS, REPO

BIN = REPO / ".venv" / "bin"
BEAM, MAX_LEN_B, MIN_LEN, BATCH = 2, 8, 3, 2
FR_EN = [i for i, (_, _, sl, tl) in enumerate(PAIRS) if (sl, tl) == ("fr", "en")]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def translator(tiny_corpus, tiny_models, tmp_path_factory):
    from llast_fairseq.api import LlastTranslator

    save = tmp_path_factory.mktemp("cascade_ckpt")
    proc = subprocess.run(
        [str(a) for a in (
            BIN / "fairseq-train", tiny_corpus, "--user-dir", REPO / "llast_fairseq", "--task", "llast_st",
            "--llm-path", tiny_models / "llm", "--asr-augment", "--arch", "llast_tiny",
            "--whisper-path", tiny_models / "whisper.pt", "--criterion", "llast_cross_entropy",
            "--optimizer", "adam", "--lr", "1e-2", "--batch-size", "4", "--max-update", "4",
            "--save-dir", save, "--disable-validation", "--no-epoch-checkpoints", "--num-workers", "0",
            "--cpu", "--seed", "1")],
        cwd=tiny_corpus, capture_output=True, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, f"fairseq-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # min_len: the random-init model must not stop at once, or the transcripts would be empty
    return LlastTranslator.from_checkpoint(str(save / "checkpoint_last.pt"), beam=BEAM,
                                           max_len_b=MAX_LEN_B, min_len=MIN_LEN)


@pytest.fixture(scope="module")
def paths(tiny_corpus):
    # longest first, so batching by length reorders them and input order is really tested
    return sorted((str(tiny_corpus / "audio" / f"utt{i}.wav") for i in FR_EN),
                  key=lambda p: -os.path.getsize(p))


def reference_translations(translator, transcripts):
    """Beam search on hand-built text-only net_inputs (one per row: no padding involved)."""
    from transformers import AutoTokenizer

    from llast_fairseq.api import text_prompt_model

    tok = AutoTokenizer.from_pretrained(translator.task.cfg.llm_path, local_files_only=True)
    texts = []
    for transcript in transcripts:
        ids = [tok.bos_token_id] + tok(
            f"[INST] {transcript}\nPlease translate the French sentence into English. [/INST]",
            add_special_tokens=False)["input_ids"]
        prompt = torch.tensor([ids])
        sample = {"id": torch.tensor([0]), "net_input": {
            "src_tokens": torch.zeros(1, 0), "src_lengths": torch.zeros(1, dtype=torch.long),
            "prompt_before": prompt, "prompt_before_lengths": torch.tensor([len(ids)]),
            "prompt_after": prompt[:, :0], "prompt_after_lengths": torch.tensor([0]),
            "prev_output_tokens": torch.full((1, 1), translator.task.target_dictionary.eos())}}
        model = text_prompt_model(translator.model)
        generator = translator.task.build_generator([model], translator.generation)
        hypo = translator.task.inference_step(generator, [model], sample)[0][0]
        tokens = hypo["tokens"].tolist()
        texts.append(tok.decode(tokens, skip_special_tokens=True).strip())
    return texts


def test_cascade(translator, paths):
    results = translator.cascade(paths, "fr", "en", batch_size=BATCH)
    assert len(results) == len(paths)
    assert all(set(r) == {"transcript", "translation", "asr_seconds", "mt_seconds"} for r in results)
    transcripts = [r["transcript"] for r in results]
    assert transcripts == translator.translate(paths, "fr", "en", batch_size=BATCH, task="asr")
    assert all(transcripts), transcripts

    translations = [r["translation"] for r in results]
    assert translations == reference_translations(translator, transcripts)
    # the check above can tell: the prompt without the transcript gives other translations
    assert reference_translations(translator, [""] * len(paths)) != translations

    for r in results:
        for key in ("asr_seconds", "mt_seconds"):
            assert isinstance(r[key], float) and r[key] > 0, (key, r)
    e2e = translator.generate(paths, "fr", "en", batch_size=BATCH)
    assert all(r["seconds"] > 0 for r in e2e)
    assert translator.cascade([], "fr", "en") == []
    with pytest.raises(KeyError, match="xx"):
        translator.cascade(paths[:1], "fr", "xx")


def test_text_only_encoder_and_prefix(translator, monkeypatch):
    """The cascade's text step: an empty audio part, Whisper not run, and the decoder's logits are
    the LLM's own on the prompt ids (left padding of the shorter row included)."""
    from llast_fairseq.api import TextPromptDataset, text_prompt_model

    model = text_prompt_model(translator.model)
    monkeypatch.setattr(translator.model.encoder, "run_whisper", lambda mel: pytest.fail("Whisper ran"))
    prompts = [translator.task.prompts.ids_with_text("st", "fr", "en", t) for t in ("Le chat dort.", "Bonjour tout le monde.")]
    dataset = TextPromptDataset(prompts, translator.task.target_dictionary)
    batch = dataset.collater([dataset[0], dataset[1]])
    net_input = batch["net_input"]
    assert net_input["src_tokens"].shape == (2, 0)
    with torch.no_grad():
        enc = model.encoder(**net_input)
        assert enc["audio_out"][0].shape == (2, 0, model.decoder.embed.embedding_dim)
        assert enc["audio_padding_mask"][0].shape == (2, 0)
        logits = model.decoder(net_input["prev_output_tokens"][:, :1], enc)[0][:, -1]
        for row, ids in enumerate(prompts):
            expected = model.decoder.llm(input_ids=torch.tensor([ids])).logits[0, -1]
            torch.testing.assert_close(logits[row], expected, atol=1e-4, rtol=0)
