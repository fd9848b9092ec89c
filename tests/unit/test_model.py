"""The llast model against the Hugging Face LLM it wraps: shapes, masks, loss alignment, cache."""
import logging
import re

import pytest
import torch
from conftest import build_task_and_model, first_batch
from fairseq.sequence_generator import SequenceGenerator

from llast_fairseq.models.whisper_state_cache import WhisperStateCache


@pytest.fixture(scope="module")
def built(tiny_corpus, tiny_models):
    torch.manual_seed(0)
    cfg, task, model = build_task_and_model(tiny_corpus, tiny_models, "--llm-lora-r", "4")
    # LoRA B starts at zero; give it weight so the adapters change the function under test
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    model.eval()
    return cfg, task, model


def test_encoder_shapes_and_masks(built):
    _, task, model = built
    batch = first_batch(task, "test")
    net = batch["net_input"]
    out = model.encoder(**{k: v for k, v in net.items() if k != "prev_output_tokens"})
    audio, mask = out["audio_out"][0], out["audio_padding_mask"][0]
    d_llm = model.decoder.llm.config.hidden_size
    # trimmed audio: positions for the longest utterance (2 mel hops each), not Whisper's 1500
    longest = int(net["src_lengths"].max())
    assert audio.shape == (4, -(-longest // 320), d_llm)
    valid = (~mask).sum(1)
    assert valid.tolist() == [-(-int(n) // 320) for n in net["src_lengths"]]
    assert out["prompt_before_padding_mask"][0].shape == net["prompt_before"].shape


@pytest.mark.parametrize("trim", [True, False])
def test_whisper_states_do_not_depend_on_the_batch_and_the_cache_is_exact(built, trim):
    _, task, model = built
    net = first_batch(task, "test")["net_input"]
    encoder = model.encoder
    encoder.trim_padding = trim
    try:
        with torch.no_grad():
            batched = encoder.whisper_states(net["src_tokens"], net["src_lengths"])
            for row, states in enumerate(batched):
                n = int(net["src_lengths"][row])
                alone = encoder.whisper_states(net["src_tokens"][row : row + 1, :n], net["src_lengths"][row : row + 1])
                assert states.size(0) == -(-n // 320)
                torch.testing.assert_close(states, alone[0], atol=1e-5, rtol=0)
            # two utterances with the same position count run as one batch, each still as if alone
            n = int(net["src_lengths"][0])
            m = (-(-n // 320) - 1) * 320 + 1
            pair = encoder.whisper_states(net["src_tokens"][:1].repeat(2, 1), torch.tensor([n, m]))
            short = encoder.whisper_states(net["src_tokens"][:1, :m], torch.tensor([m]))
            torch.testing.assert_close(pair[0], batched[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(pair[1], short[0], atol=1e-5, rtol=0)
            encoder.state_cache = WhisperStateCache()
            calls = []
            original = encoder.run_whisper
            encoder.run_whisper = lambda mel: calls.append(mel.size(0)) or original(mel)
            encoder.whisper_states(net["src_tokens"], net["src_lengths"])
            assert sum(calls) == 4 and len(encoder.state_cache) == 0  # no keys: no cache
            calls.clear()
            keys = net["audio_keys"]
            twice = [0, 0, 1]  # row 0 and its twin (same audio), then row 1
            first = encoder.whisper_states(net["src_tokens"][twice], net["src_lengths"][twice],
                                           [keys[i] for i in twice])
            again = encoder.whisper_states(net["src_tokens"], net["src_lengths"], keys)
            assert sum(calls) == 4  # rows 0 and 1 once each, then only rows 2 and 3
            assert sorted(encoder.state_cache) == sorted(keys)
            for a, b in zip(first + again, [batched[0]] + batched[:2] + batched):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    finally:
        encoder.trim_padding = True
        encoder.state_cache = None
        del encoder.run_whisper


def test_fill_whisper_cache_before_the_epoch_then_no_whisper_in_steps(built):
    """begin_epoch runs Whisper over every loaded split once, in batches of equal position
    count, with the states an uncached forward computes; forwards then read the cache."""
    _, task, model = built
    encoder = model.encoder
    batch = first_batch(task, "test")
    net = {k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"}
    with torch.no_grad():
        uncached = encoder(**net)["audio_out"][0]
    calls = []
    original = encoder.run_whisper
    encoder.run_whisper = lambda mel: calls.append(mel.size(0)) or original(mel)
    encoder.state_cache = WhisperStateCache()
    try:
        task.begin_epoch(1, model)
        dataset = task.dataset("test")
        paths = {dataset.audio_paths[row] for row, _ in dataset.examples}
        assert set(encoder.state_cache) == paths and sum(calls) == len(paths)
        calls.clear()
        # the dataset no longer decodes what the cache holds: batches carry keys, not audio
        batch = first_batch(task, "test")
        net = {k: v for k, v in batch["net_input"].items() if k != "prev_output_tokens"}
        assert net["src_tokens"].numel() == 0
        with torch.no_grad():
            cached = encoder(**net)["audio_out"][0]
        task.begin_epoch(2, model)  # nothing left to encode
        assert calls == []
        torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=0)
        encoder.state_cache = WhisperStateCache()  # keys the cache lost: a clear error
        with pytest.raises(RuntimeError, match="no audio and no cached Whisper states"):
            encoder(**net)
    finally:
        encoder.state_cache = None
        dataset.cached_audio = frozenset()
        del encoder.run_whisper


def test_whisper_state_cache_holds_its_cap_and_trains_as_without_a_cache(tiny_corpus, tiny_models, caplog):
    """A cap that holds a few of the 8 utterances: the stored tensor bytes stay under it, the
    shortest utterances are the cached ones, the others keep their audio in the batches and run
    through Whisper at each step, and three Adam updates give the losses of a run without a cache."""
    cap_gb = 7e-5  # 70 KB; the tiny Whisper's float32 states take 256 bytes per position
    runs = {}
    for name, extra in [("uncached", []), ("capped", ["--cache-whisper-states", "--whisper-cache-gb", str(cap_gb)])]:
        torch.manual_seed(0)
        cfg, task, model = build_task_and_model(tiny_corpus, tiny_models, *extra)
        task.load_dataset("train")
        criterion = task.build_criterion(cfg.criterion)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        with caplog.at_level(logging.INFO):
            task.begin_epoch(1, model)
        dataset, losses = task.dataset("train"), []
        for indices in ([0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]):
            batch = dataset.collater([dataset[i] for i in indices])
            if name == "capped":  # cached rows come without audio, the others with it
                assert 0 < int((batch["net_input"]["src_lengths"] == 0).sum()) < len(indices)
            loss, _, _ = criterion(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        runs[name] = losses, model.encoder.state_cache, dataset
    torch.testing.assert_close(torch.stack(runs["capped"][0]), torch.stack(runs["uncached"][0]), atol=1e-5, rtol=1e-5)
    _, cache, dataset = runs["capped"]
    stored = list(cache.values())
    assert cache.nbytes == sum(s.untyped_storage().nbytes() for s in stored) <= cap_gb * 1e9
    assert 0 < len(cache) < len(dataset.audio_paths)
    length = {dataset.audio_paths[row]: int(n) for (row, _), n in zip(dataset.examples, dataset.sizes)}
    assert max(length[k] for k in cache) <= min(length[k] for k in length if k not in cache)
    uncached = len(dataset.audio_paths) - len(cache)
    assert (f"Whisper state cache: {len(cache)} utterances, {cache.nbytes / 1e9:.3g} GB of the {cap_gb:g} GB cap "
            f"(tensor bytes, this process); {uncached} utterances over the cap") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        task.begin_epoch(2, model)  # what is over the cap is not encoded again for the cache
    assert "Whisper states" not in caplog.text


def test_whisper_state_cache_needs_a_frozen_whisper_and_a_size(tiny_corpus, tiny_models):
    with pytest.raises(ValueError, match="--cache-whisper-states needs a frozen"):
        build_task_and_model(tiny_corpus, tiny_models, "--whisper-lora-r", "4", "--cache-whisper-states")
    with pytest.raises(ValueError, match="--whisper-cache-gb is -1.0: give the cache's size in GB, or 0"):
        build_task_and_model(tiny_corpus, tiny_models, "--cache-whisper-states", "--whisper-cache-gb", "-1")


def test_prefix_is_right_aligned_with_real_positions(built):
    _, task, model = built
    batch = first_batch(task, "test")
    net = batch["net_input"]
    enc = model.encoder(**{k: v for k, v in net.items() if k != "prev_output_tokens"})
    embeds, valid, positions = model.decoder.prefix(enc)
    n_valid = (net["prompt_before_lengths"] + (~enc["audio_padding_mask"][0]).sum(1)
               + net["prompt_after_lengths"])
    assert valid.sum(1).tolist() == n_valid.tolist()
    for row in range(valid.size(0)):
        pad = valid.size(1) - int(n_valid[row])
        assert not valid[row, :pad].any() and valid[row, pad:].all()
        assert positions[row, pad:].tolist() == list(range(int(n_valid[row])))
        # the last column is the last prompt token ([/INST]'s last piece)
        last_prompt_id = net["prompt_after"][row, net["prompt_after_lengths"][row] - 1]
        assert torch.equal(embeds[row, -1], model.decoder.embed.weight[last_prompt_id])


def test_loss_covers_only_target_tokens(built):
    cfg, task, model = built
    assert_loss_is_hf_labels_loss(model, task, task.build_criterion(cfg.criterion))


def assert_loss_is_hf_labels_loss(model, task, criterion):
    """fairseq's loss equals HF's loss with labels -100 on every prompt and audio position."""
    batch = first_batch(task, "test", batch_size=1)
    net = batch["net_input"]
    logits, _ = model(**net)
    target = batch["target"]
    assert logits.shape[:2] == target.shape
    loss, _, log = criterion(model, batch, reduce=True)

    enc = model.encoder(**{k: v for k, v in net.items() if k != "prev_output_tokens"})
    embeds, valid, _ = model.decoder.prefix(enc)
    assert valid.all()  # a single row: no padding
    tokens = target[0]
    inputs = torch.cat([embeds[0], model.decoder.embed(tokens)], dim=0)[None]
    labels = torch.cat([torch.full((embeds.size(1),), -100), tokens])[None]
    hf = model.decoder.llm(inputs_embeds=inputs, labels=labels)
    assert torch.allclose(loss / log["ntokens"], hf.loss, atol=1e-5), (loss / log["ntokens"], hf.loss)
    assert log["ntokens"] == tokens.numel()


def test_only_lora_and_adaptor_train(built):
    _, _, model = built
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n or n.startswith("encoder.adaptor.") for n in trained)
    assert any(n.startswith("encoder.adaptor.") for n in trained)
    assert any(n.startswith("decoder.llm.") and "lora_" in n for n in trained)
    assert not any(n.startswith("encoder.whisper.") for n in trained)  # llast_tiny: no S-LoRA
    assert list(model.state_dict()) == trained


def test_checkpoint_keys_must_match(built):
    _, _, model = built
    state = model.state_dict()
    model.load_state_dict(state)
    first = next(iter(state))
    missing = {k: v for k, v in state.items() if k != first}
    with pytest.raises(RuntimeError, match=rf"missing \['{re.escape(first)}'\], unexpected \[\]"):
        model.load_state_dict(missing)
    # a key the model has no parameter for (another adaptor, LoRA on other modules) is an error too
    extra = {**state, "encoder.adaptor.conv.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"missing \[\], unexpected \['encoder.adaptor.conv.weight'\]"):
        model.load_state_dict(extra)


def _encoder_out(model, net):
    return model.encoder(**{k: v for k, v in net.items() if k != "prev_output_tokens"})


def test_incremental_decoding_matches_full_forward_with_beam_reorder(built):
    _, task, model = built
    batch = first_batch(task, "test")
    net = batch["net_input"]
    prev = net["prev_output_tokens"]
    with torch.no_grad():
        enc = _encoder_out(model, net)
        # reorder mid-sequence like a beam search: duplicate row 0, drop row 1, swap 2 and 3
        order = torch.tensor([0, 0, 3, 2])
        split = 3
        state = {}
        steps = []
        for t in range(prev.size(1)):
            if t == split:
                model.decoder.reorder_incremental_state_scripting(state, order)
                enc = model.encoder.reorder_encoder_out(enc, order)
                prev = prev.index_select(0, order)
                steps = [s.index_select(0, order) for s in steps]
            logits, _ = model.decoder(prev[:, : t + 1], enc, incremental_state=state)
            steps.append(logits[:, -1])
        incremental = torch.stack(steps, dim=1)
        full, _ = model.decoder(prev, enc)
    real = prev.ne(task.target_dictionary.pad())  # padded target steps are not compared
    assert torch.allclose(incremental[real], full[real], atol=1e-4), (incremental - full)[real].abs().max()


def hf_generate(model, task, batch, **kwargs):
    """HF ``generate`` on the prefix embeddings the decoder builds for ``batch``, with
    SequenceGenerator's rules: pad never generated, EOS not first. Returns the output of
    ``generate(..., return_dict_in_generate=True, output_scores=True)``."""
    d = task.target_dictionary
    with torch.no_grad():
        embeds, valid, _ = model.decoder.prefix(_encoder_out(model, batch["net_input"]))
        return model.decoder.llm.generate(
            inputs_embeds=embeds, attention_mask=valid.long(), do_sample=False, eos_token_id=d.eos(),
            pad_token_id=d.pad(), suppress_tokens=[d.pad()], min_new_tokens=1,
            return_dict_in_generate=True, output_scores=True, **kwargs)


def until_eos(tokens, eos):
    tokens = tokens.tolist()
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def assert_beam1_is_hf_greedy(model, task, batch, steps):
    """SequenceGenerator's beam 1 gives HF greedy decoding's tokens, token for token."""
    eos = task.target_dictionary.eos()
    with torch.no_grad():
        hypos = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_b=steps).generate([model], batch)
    hf = hf_generate(model, task, batch, max_new_tokens=steps, num_beams=1).sequences
    for row, hypo in enumerate(hypos):
        ours, theirs = hypo[0]["tokens"].tolist(), until_eos(hf[row], eos)
        if theirs[-1] == eos:
            assert ours == theirs, row
        else:  # HF stops at max_new_tokens; fairseq then appends EOS
            assert ours == theirs + [eos], row


def test_beam1_matches_hf_greedy(built):
    _, task, model = built
    assert_beam1_is_hf_greedy(model, task, first_batch(task, "test"), steps=12)


def test_beam5_matches_hf_beam_search(built):
    """SequenceGenerator's beam 5 against HF generate(num_beams=5, early_stopping=True) on the same
    prefix embeddings: the same best hypothesis and length-normalized score for every row. A bias
    on EOS's logit (the same model for both) makes hypotheses end at different steps, so finished
    beams, early stopping and length normalization are all exercised."""
    _, task, model = built
    batch = first_batch(task, "test")
    eos, steps = task.target_dictionary.eos(), 20
    bias = torch.zeros(len(task.target_dictionary))
    bias[eos] = 4.0  # hypotheses then end after 3 to 7 tokens
    hook = model.decoder.llm.get_output_embeddings().register_forward_hook(lambda m, i, logits: logits + bias)
    try:
        with torch.no_grad():
            hypos = SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_b=steps).generate(
                [model], batch)
        hf = hf_generate(model, task, batch, max_new_tokens=steps, num_beams=5, early_stopping=True,
                         length_penalty=1.0)
    finally:
        hook.remove()
    lengths = []
    for row, nbest in enumerate(hypos):
        theirs = until_eos(hf.sequences[row], eos)
        assert theirs[-1] == eos and len(theirs) < steps, row  # ended by EOS, not by the length limit
        assert nbest[0]["tokens"].tolist() == theirs, row
        assert float(nbest[0]["score"]) == pytest.approx(float(hf.sequences_scores[row]), abs=1e-4), row
        lengths.append(len(theirs))
    assert len(set(lengths)) > 1, lengths  # hypotheses of different lengths


def test_a_sentence_decodes_alone_as_in_a_padded_batch(built):
    """Beam search over a batch of prefixes of different lengths (left padding, per-row
    positions) gives each sentence the hypotheses and scores it gets alone."""
    _, task, model = built
    batch = first_batch(task, "test")
    net = batch["net_input"]
    assert len(set(net["src_lengths"].tolist())) > 1
    dataset = task.dataset("test")
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=5, max_len_b=10)
    with torch.no_grad():
        together = generator.generate([model], batch)
        for row, i in enumerate(batch["id"].tolist()):
            alone = generator.generate([model], dataset.collater([dataset[i]]))[0]
            assert [h["tokens"].tolist() for h in alone] == [h["tokens"].tolist() for h in together[row]], i
            assert [float(h["score"]) for h in alone] == pytest.approx(
                [float(h["score"]) for h in together[row]], abs=1e-4), i


@pytest.mark.parametrize("beam", [1, 5])
def test_shared_prefix_beam_search_equals_recomputing_every_step(built, monkeypatch, beam):
    """Beam search fills the KV cache once per sentence and expands it to the beams; hypotheses
    and scores are those of recomputing the whole sequence at every step without a cache (rows
    with prefixes of different lengths in one batch)."""
    _, task, model = built
    batch = first_batch(task, "test")
    assert len(set(batch["net_input"]["src_lengths"].tolist())) > 1  # prefixes of different lengths
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=10)

    def hypotheses():
        with torch.no_grad():
            return [[(h["tokens"].tolist(), float(h["score"])) for h in nbest]
                    for nbest in generator.generate([model], batch)]

    runs = []
    llm_forward = model.decoder.llm.forward
    monkeypatch.setattr(model.decoder.llm, "forward", lambda *a, **k: runs.append(
        k["inputs_embeds"].shape[:2]) or llm_forward(*a, **k))
    shared = hypotheses()
    prefix = max(length for _, length in runs)
    assert runs[0] == (4, prefix)  # the prefix ran once per sentence, not once per beam
    assert all(length == 1 for _, length in runs[1:])
    monkeypatch.setattr(model.decoder, "forward", lambda prev, encoder_out, incremental_state=None, **_:
                        model.decoder.forward_full(prev, encoder_out))
    recomputed = hypotheses()
    for ours, theirs in zip(shared, recomputed):
        assert [tokens for tokens, _ in ours] == [tokens for tokens, _ in theirs]
        assert [score for _, score in ours] == pytest.approx([score for _, score in theirs], abs=1e-4)


def test_slora_frame_stacking_and_full_llm_training(tiny_corpus, tiny_models, built):
    _, task, model = build_task_and_model(
        tiny_corpus, tiny_models, "--whisper-lora-r", "4", "--frame-stack", "3", "--llm-training", "full")
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    whisper = {n for n in trained if n.startswith("encoder.whisper.")}
    assert whisper and all("lora_" in n for n in whisper)
    assert {n for n, _ in model.decoder.llm.named_parameters(prefix="decoder.llm")} <= trained
    batch = first_batch(task, "test")
    net = batch["net_input"]
    with torch.no_grad():
        out = _encoder_out(model, net)
        whisper_states = model.encoder.whisper_states(net["src_tokens"], net["src_lengths"])
    positions = -(-int(net["src_lengths"].max()) // 320)
    assert out["audio_out"][0].shape[1] == -(-positions // 3)
    assert (~out["audio_padding_mask"][0]).sum(1).tolist() == [
        -(-(-(-int(n) // 320)) // 3) for n in net["src_lengths"]]
    # each row is its own Whisper states through the adaptor alone (test_adaptor.py checks the
    # stacking itself against stacking by hand)
    for row, states in enumerate(whisper_states):
        with torch.no_grad():
            alone, n = model.encoder.adaptor(states[None], torch.tensor([len(states)]))
        torch.testing.assert_close(out["audio_out"][0][row, : int(n)], alone[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="--llm-lora-r"):
        build_task_and_model(tiny_corpus, tiny_models, "--llm-lora-r", "0")
    with pytest.raises(ValueError, match="whisper-lora-targets"):
        build_task_and_model(tiny_corpus, tiny_models, "--whisper-lora-r", "2",
                             "--whisper-lora-targets", "no_such_module")


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_corpus, tiny_models):
    """With LoRA B non-zero, so that gradients reach LoRA A through the recomputed activations of
    the LLM and of Whisper (S-LoRA on, with dropout: the recomputation replays its masks)."""
    grads = []
    for extra in ([], ["--gradient-checkpointing"]):
        torch.manual_seed(0)
        cfg, task, model = build_task_and_model(tiny_corpus, tiny_models, "--whisper-lora-r", "4",
                                                "--whisper-lora-dropout", "0.1", *extra)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
        model.train()
        assert model.decoder.llm.is_gradient_checkpointing == bool(extra)
        loss, _, _ = task.build_criterion(cfg.criterion)(model, first_batch(task, "test"))
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (loss_a, grad_a), (loss_b, grad_b) = grads
    assert torch.allclose(loss_a, loss_b, atol=1e-5)
    assert grad_a.keys() == grad_b.keys()
    lora_a = [n for n in grad_a if "lora_A" in n]
    assert any("whisper" in n for n in lora_a) and any("llm" in n for n in lora_a)
    assert lora_a and all(grad_a[n].abs().max() > 1e-6 for n in lora_a)
    for name in grad_a:
        torch.testing.assert_close(grad_b[name], grad_a[name], atol=1e-5, rtol=1e-4, msg=name)


def test_qwen2_style_llm_with_chat_template_and_no_unk(tiny_corpus, tiny_models, tmp_path):
    """A byte-level BPE LLM without unk, EOS <|im_end|>, pad <|endoftext|>, a wider LM head, and
    the tokenizer's own chat template: its loss is HF's labels loss, beam 1 is HF greedy decoding
    token for token, and it trains a step."""
    from conftest import PAIRS
    from llast_fairseq.tiny_models import make_tiny_qwen2

    qwen = tmp_path / "qwen2"
    make_tiny_qwen2(str(qwen), [t for s, t_, _, _ in PAIRS for t in (s, t_)] * 20)
    cfg, task, model = build_task_and_model(
        tiny_corpus, tiny_models, "--llm-path", str(qwen), "--prompt-template", "chat")
    d, tok = task.target_dictionary, task.tokenizer
    assert tok.unk_token_id is None and (d.pad(), d.eos()) == (tok.pad_token_id, tok.eos_token_id)
    assert len(d) == model.decoder.llm.config.vocab_size == len(tok) + 7
    before, after = task.prompts.ids("st", "fr", "en")
    assert tok.decode(before + after) == (
        "<|im_start|>user\n\nPlease translate the French sentence into English.<|im_end|>\n"
        "<|im_start|>assistant\n")
    for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapters count
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    model.eval()
    assert_loss_is_hf_labels_loss(model, task, task.build_criterion(cfg.criterion))
    assert_beam1_is_hf_greedy(model, task, first_batch(task, "test"), steps=8)
    model.train()
    loss, _, _ = task.build_criterion(cfg.criterion)(model, first_batch(task, "test"))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    # Llama-3 style: neither a pad (other than EOS) nor an unk token -> --pad-token is required
    from llast_fairseq.data.llm_dictionary import build_llm_dictionary

    tok.pad_token = None
    with pytest.raises(ValueError, match="--pad-token"):
        build_llm_dictionary(tok, len(d))
    reserved = tok.convert_tokens_to_ids("<|im_start|>")
    assert build_llm_dictionary(tok, len(d), pad_token="<|im_start|>").pad() == reserved


def test_bfloat16_llm_keeps_float32_lora_and_trains(tiny_corpus, tiny_models):
    cfg, task, model = build_task_and_model(tiny_corpus, tiny_models, "--llm-dtype", "bfloat16")
    llm = model.decoder.llm
    assert llm.get_input_embeddings().weight.dtype == torch.bfloat16
    lora = [p for n, p in llm.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    loss, _, _ = task.build_criterion(cfg.criterion)(model, first_batch(task, "test"))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in lora)


@pytest.fixture
def bf16_speedup(monkeypatch):
    """Fakes what the CPU probe measures: ``bf16_speedup(x)`` makes bf16 x times as fast as fp32."""
    from llast_fairseq.models import autocast

    def fake(speedup: float):
        monkeypatch.setattr(autocast, "cpu_bf16_speedup", lambda: speedup)
        autocast.bf16_autocast_pays.cache_clear()

    yield fake
    autocast.bf16_autocast_pays.cache_clear()


@pytest.mark.parametrize("speedup", [2.3, 0.013])
def test_autocast_bf16_only_where_the_cpu_runs_bf16_faster(tiny_corpus, tiny_models, bf16_speedup,
                                                          caplog, speedup):
    """Native bf16 (2.3x faster): bf16 logits and one info line. Emulated bf16 (75x slower): the
    same model runs in float32, exactly as without the flag, and says so once as a warning."""
    bf16_speedup(speedup)
    _, task, model = build_task_and_model(tiny_corpus, tiny_models, "--autocast-bf16")
    model.eval()
    net = first_batch(task, "test")["net_input"]
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="llast_fairseq.models.autocast"):
        logits = model(**net)[0]
        model(**net)
    lines = [r for r in caplog.records if r.name == "llast_fairseq.models.autocast"]
    assert len(lines) == 1  # once per process, not per forward
    if speedup > 1:
        assert logits.dtype == torch.bfloat16
        assert lines[0].levelno == logging.INFO and "2.3x faster" in lines[0].getMessage()
    else:
        model.encoder.autocast_bf16 = model.decoder.autocast_bf16 = False
        with torch.no_grad():
            assert torch.equal(logits, model(**net)[0])
        message = lines[0].getMessage()
        assert lines[0].levelno == logging.WARNING
        assert "77x slower" in message and "runs in float32" in message and "capability" in message


def test_bf16_autocast_runs_matmuls_in_bf16_and_keeps_fp32_weights_and_grads(tiny_corpus, tiny_models,
                                                                            bf16_speedup):
    """--autocast-bf16: the same weights give bf16 logits close to the float32 ones, float32
    gradients close to the float32 run's, and the Whisper cache holds the bf16 states."""
    bf16_speedup(2.3)  # as on a CPU with native bf16, whatever this one has
    runs = []
    for extra in ([], ["--autocast-bf16", "--cache-whisper-states"]):
        torch.manual_seed(0)
        cfg, task, model = build_task_and_model(tiny_corpus, tiny_models, "--llm-training", "full", *extra)
        model.train()
        batch = first_batch(task, "test")
        logits = model(**batch["net_input"])[0]
        loss, _, _ = task.build_criterion(cfg.criterion)(model, batch)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        runs.append((model, logits, loss.detach(), grads))
    (fp32, logits32, loss32, grad32), (bf16, logits16, loss16, grad16) = runs
    assert logits32.dtype == torch.float32 and logits16.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    # bf16 moves the logits far less than leaving the audio out does (the control that says what
    # "close" means): the bf16 model still reads the audio, and reads it as float32 does
    net = batch["net_input"]
    with torch.no_grad():
        enc = _encoder_out(fp32, net)
        no_audio = {**enc, "audio_out": [enc["audio_out"][0][:, :0]],
                    "audio_padding_mask": [enc["audio_padding_mask"][0][:, :0]]}
        logits_no_audio = fp32.decoder(net["prev_output_tokens"], no_audio)[0]
    bf16_gap = (logits16.float() - logits32).abs().mean()
    audio_gap = (logits_no_audio - logits32).abs().mean()
    assert bf16_gap < 0.05 * audio_gap, (bf16_gap, audio_gap)  # here about 0.013x
    assert abs(float(loss16 - loss32)) < 0.02 * float(loss32)
    assert grad16.dtype == torch.float32 and torch.cosine_similarity(grad16, grad32, dim=0) > 0.99
    cached = list(bf16.encoder.state_cache.values())
    assert cached and all(s.dtype == torch.bfloat16 for s in cached)


def test_a_new_adaptor_is_one_class_and_one_choice(tiny_corpus, tiny_models):
    """An adaptor registered outside the package is built by --adaptor NAME, its lengths make the
    encoder's padding mask, and it trains and is saved: no edit to the encoder or the model."""
    from llast_fairseq.models.adaptor import ADAPTORS, Adaptor, register_adaptor

    @register_adaptor("test-mean2")
    class MeanOfPairs(Adaptor):
        def __init__(self, input_dim, output_dim):
            super().__init__(output_dim)
            self.proj = torch.nn.Linear(input_dim, output_dim)

        @classmethod
        def build(cls, cfg, input_dim, output_dim):
            return cls(input_dim, output_dim)

        def forward(self, states, lengths):
            states = torch.nn.functional.pad(states, (0, 0, 0, states.size(1) % 2))
            pairs = states.reshape(states.size(0), -1, 2, states.size(2)).mean(2)
            return self.proj(pairs), torch.div(lengths + 1, 2, rounding_mode="floor")

    try:
        cfg, task, model = build_task_and_model(tiny_corpus, tiny_models, "--adaptor", "test-mean2")
        assert isinstance(model.encoder.adaptor, MeanOfPairs)
        batch = first_batch(task, "test")
        out = _encoder_out(model, batch["net_input"])
        assert (~out["audio_padding_mask"][0]).sum(1).tolist() == [
            -(-(-(-int(n) // 320)) // 2) for n in batch["net_input"]["src_lengths"]]
        loss, _, _ = task.build_criterion(cfg.criterion)(model, batch)
        loss.backward()
        assert model.encoder.adaptor.proj.weight.grad.abs().sum() > 0
        assert {"encoder.adaptor.proj.weight", "encoder.adaptor.proj.bias"} <= set(model.state_dict())
    finally:
        del ADAPTORS["test-mean2"]


def test_the_prompt_contract_is_saved_with_the_model_and_checked(tiny_corpus, tiny_models, built):
    """The model's config holds the template and pad token it was trained with; a task that
    prompts otherwise cannot build it or decode with it."""
    from conftest import fairseq_cfg
    from fairseq import tasks

    from llast_fairseq.api import LlastTranslator

    cfg, task, model = built
    assert (model.cfg.prompt_template, model.cfg.pad_token) == ("llama2", None)
    assert (cfg.model.prompt_template, cfg.model.pad_token) == ("llama2", None)  # as fairseq-train saves it
    # the template's name or its text: the same prompts
    same = tasks.setup_task(fairseq_cfg(tiny_corpus, tiny_models, "--prompt-template",
                                        "[INST] <audio>\n{instruction} [/INST]").task)
    LlastTranslator(model, same, beam=1)
    for flag, value in [("--prompt-template", "<audio>{src} to {tgt}:"), ("--pad-token", "<unk>")]:
        other = tasks.setup_task(fairseq_cfg(tiny_corpus, tiny_models, flag, value).task)
        trained = "'llama2'" if flag == "--prompt-template" else "None"
        message = rf"trained with {flag} {trained} but is asked to decode with {flag} '{re.escape(value)}'"
        with pytest.raises(ValueError, match=message):
            other.build_model(cfg.model)
        with pytest.raises(ValueError, match=message):
            LlastTranslator(model, other, beam=1)


@pytest.mark.parametrize("extra", [(), ("--frame-stack", "3"), ("--arch", "llast", "--whisper-lora-r", "0")])
def test_max_tokens_counts_the_positions_the_llm_sees(tiny_corpus, tiny_models, extra):
    """--max-tokens bounds LLM positions: each example's count is its audio after the adaptor plus
    prompt plus target, as the LLM receives them; fairseq's batches then respect the bound."""
    _, task, model = build_task_and_model(tiny_corpus, tiny_models, *extra)
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        _, valid, _ = model.decoder.prefix(model.encoder(**batch["net_input"]))
    seen = valid.sum(1) + batch["target"].ne(task.target_dictionary.pad()).sum(1)
    # from the 16 kHz sample counts (this corpus's manifests count native 22.05 kHz samples)
    samples = batch["net_input"]["src_lengths"].numpy()
    assert (dataset.audio_positions(samples) + dataset.text_lengths[batch["id"].numpy()]).tolist() == seen.tolist()
    max_tokens = 2 * int(seen.max())
    batches = task.get_batch_iterator(dataset, max_tokens=max_tokens).next_epoch_itr(shuffle=False)
    sizes = [[dataset.num_tokens(int(i)) for i in b["id"]] for b in batches]
    assert sum(map(len, sizes)) == len(dataset) and len(sizes) > 1
    assert all(len(s) * max(s) <= max_tokens for s in sizes)  # fairseq counts padding to the longest
