"""The load-time check of manifest rows (llast_fairseq/data/manifest_check.py) on real clips:
espeak-ng speech written as wav, flac and mp3, stored and deflated zips, fairseq-style fbank .npy
entries; then through the task's load_dataset (one error, --skip-bad-rows, the cache) and the
decoder's length check."""
import json
import os
import re
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf
from conftest import fairseq_cfg, speak

from llast_fairseq.data import manifest_check
from llast_fairseq.data.audio import SAMPLE_RATE, load_waveform, resampled_length, to_mono_16k
from llast_fairseq.data.manifest import MANIFEST_COLUMNS, write_config, write_tsv
from llast_fairseq.data.manifest_check import FEATURES, ManifestError, Needs, check_manifest, check_rows
from llast_fairseq.prep.pipeline import zip_manifest


def entry_offset(zip_path, name):
    """Where an entry's data starts (a compressed one too: zip_manifest refuses those)."""
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(name)
    return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Real speech at 22.05 kHz as wav, flac and mp3; at 16 kHz as wav; a clip of 31 s; a clip
    cut to 28 samples; a stored zip, a deflated zip and fairseq's fbank80.zip of .npy features."""
    root = tmp_path_factory.mktemp("clips")
    speech, rate = speak("Le chat mange une pomme dans le jardin.", "fr")
    for ext in ("wav", "flac", "mp3"):
        sf.write(root / f"a.{ext}", speech, rate)
    sf.write(root / "a16.wav", to_mono_16k(speech, rate), SAMPLE_RATE)
    reps = int(31 * rate / len(speech)) + 1
    sf.write(root / "long.wav", np.tile(speech, reps), rate)
    sf.write(root / "cut.wav", speech[:28], rate)
    with zipfile.ZipFile(root / "audio.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.write(root / "a.wav", "a.wav")
        zf.write(root / "a.flac", "a.flac")
    with zipfile.ZipFile(root / "deflated.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(root / "a.wav", "a.wav")
    with zipfile.ZipFile(root / "fbank80.zip", "w", zipfile.ZIP_STORED) as zf:
        for i in range(2):
            with zf.open(f"utt{i}.npy", "w") as f:
                np.save(f, np.zeros((120, 80), dtype=np.float32))
    return {"root": root, "rate": rate, "frames": len(speech), "frames_16k": len(load_waveform(str(root / "a.wav")))}


def row(audio, n_frames, **fields):
    values = dict(id="u", audio=str(audio), n_frames=str(n_frames), tgt_text="The cat eats.",
                  src_text="Le chat mange.", src_lang="fr", tgt_lang="en", speaker="s")
    values.update(fields)
    return values


def write_manifest(root, name, rows, columns=MANIFEST_COLUMNS):
    rows = [dict(r, id=r["id"] if r["id"] != "u" else f"u{i}") for i, r in enumerate(rows)]
    write_tsv(root / f"{name}.tsv", rows, columns)
    write_config(root)
    return root / f"{name}.tsv"


def read_rows(tsv):
    from fairseq.data.audio.speech_to_text_dataset import SpeechToTextDatasetCreator
    return SpeechToTextDatasetCreator._load_samples_from_tsv(str(tsv.parent), tsv.stem)


def check(tmp_path, rows, needs=Needs(("tgt_text",))):
    tsv = write_manifest(tmp_path, "train", rows)
    return check_rows(tsv, read_rows(tsv), tmp_path, needs)


def test_good_rows_pass_counted_at_16khz_or_at_their_own_rate(clips, tmp_path):
    """wav, flac, mp3 and zip entries, with n_frames at 16 kHz (llast-prep) or at 22.05 kHz
    (fairseq's get_zip_manifest); the dataset's sizes are the decoded 16 kHz lengths."""
    root, native, n16 = clips["root"], clips["frames"], clips["frames_16k"]
    slices = zip_manifest(root / "audio.zip")
    entries = [f"{root / 'audio.zip'}:{offset}:{length}" for offset, length in slices.values()]
    rows = [row(root / f"a.{ext}", n) for ext in ("wav", "flac", "mp3") for n in (native, n16)]
    rows += [row(e, native) for e in entries] + [row(root / "a16.wav", n16)]
    rows.append(row(root / "a.mp3", native + 1000))  # another decoder's count, within two mp3 frames
    verdict = check(tmp_path, rows)
    assert verdict.problems == []
    counts = [int(r["n_frames"]) for r in rows]
    assert verdict.samples_16k(counts).tolist() == [n16] * len(rows[:-1]) + [resampled_length(native + 1000, clips["rate"])]
    assert [r for r, _ in verdict.rate_runs] == [clips["rate"], SAMPLE_RATE] * 3 + [clips["rate"], SAMPLE_RATE,
                                                                                    clips["rate"]]


def test_each_bad_row_is_found_with_its_reason(clips, tmp_path):
    root, native = clips["root"], clips["frames"]
    wav_offset, wav_length = zip_manifest(root / "audio.zip")["a.wav"]
    zipped = root / "audio.zip"
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    cases = [  # (row, field, words of the reason)
        (row(root / "cut.wav", 27208), "n_frames", "27208 samples, but the header of"),
        (row(root / "gone.wav", native), "audio", "file not found"),
        (row(root / "gone.mp3", native), "audio", "file not found"),
        (row(f"{zipped}:{os.path.getsize(zipped) - 100}:{wav_length}", native), "audio", "lie outside"),
        (row(f"{zipped}:{wav_offset + 2}:{wav_length}", native), "audio", "no entry of"),
        (row(f"{zipped}:{wav_offset}:{wav_length - 1}", native), "audio", "holds"),
        (row(f"{root / 'deflated.zip'}:{entry_offset(root / 'deflated.zip', 'a.wav')}:{wav_length}", native),
         "audio", "is compressed (deflate)"),
        (row(root / "long.wav", sf.info(root / "long.wav").frames), "audio", "s long; Whisper reads at most 30 s"),
        (row(root / "a.wav", native, tgt_text=" "), "tgt_text", "empty"),
        (row(root / "a.wav", native, src_lang="xx"), "src_lang", "unknown language code 'xx'"),
        (row(root / "a.wav", native, tgt_lang="fr-BE"), None, None),  # a region code names French
        (row(root / "a.wav", "12.5"), "n_frames", "not a positive whole number"),
        (row("", native), "audio", "empty"),
        (row(tmp_path / "bad.wav", native), "audio", "the header does not open as audio"),
        (row(f"{tmp_path / 'bad.wav'}:0:9", native), "audio", "cannot be read as a zip"),
        (row(f"{zipped}:{wav_offset}", native), "audio", "is neither an audio file nor archive.zip:byte_offset"),
    ]
    found = check(tmp_path, [r for r, _, _ in cases]).problems
    for i, (_, field, words) in enumerate(cases):
        mine = [(p.field, p.reason) for p in found if p.row == i]
        if field is None:
            assert mine == [], mine
        else:
            assert len(mine) == 1 and mine[0][0] == field and words in mine[0][1], (i, mine)


def test_features_manifest_says_llast_needs_raw_audio(clips, tiny_models, tmp_path):
    """fairseq's prep_covost_data.py manifest: fbank80.zip:offset:length of .npy entries (offsets as
    its get_zip_manifest computes them), n_frames in feature frames, no language columns."""
    zipped = clips["root"] / "fbank80.zip"
    with zipfile.ZipFile(zipped) as zf:
        entries = [f"{zipped}:{i.header_offset + 30 + len(i.filename)}:{i.file_size}" for i in zf.infolist()]
    rows = [dict(id=f"utt{i}", audio=e, n_frames="120", tgt_text="The cat eats.", speaker="s")
            for i, e in enumerate(entries)]
    rows.append(dict(rows[0], id="loose", audio=str(clips["root"] / "x.npy")))
    np.save(clips["root"] / "x.npy", np.zeros((120, 80), dtype=np.float32))
    write_manifest(tmp_path, "train", rows, columns=["id", "audio", "n_frames", "tgt_text", "speaker"])
    task = setup_task(tmp_path, tiny_models, "--src-lang", "fr", "--tgt-lang", "en")
    with pytest.raises(ManifestError) as error:
        task.load_dataset("train")
    text = str(error.value)
    assert "LLaST runs Whisper on raw audio: prepare the data with llast-prep-covost2 or llast-prep-fleurs" in text
    assert text.count(FEATURES) == 3, text


def setup_task(data, models, *extra):
    from fairseq import tasks, utils

    cfg = fairseq_cfg(data, models, *extra)
    utils.import_user_module(cfg.common)
    return tasks.setup_task(cfg.task)


def mixed_manifest(clips, tmp_path, n_bad):
    """train.tsv: two good rows, then ``n_bad`` rows whose clip is missing, then one good row."""
    root, native = clips["root"], clips["frames"]
    rows = [row(root / "a.wav", native), row(root / "a.flac", native)]
    rows += [row(root / f"missing{i}.wav", native) for i in range(n_bad)]
    rows.append(row(root / "a.mp3", native))
    return write_manifest(tmp_path, "train", rows)


def test_one_error_lists_the_bad_rows_of_all_manifests_and_counts_the_rest(clips, tiny_models, tmp_path):
    tsv = mixed_manifest(clips, tmp_path, 24)
    write_manifest(tmp_path, "train_b", [row(clips["root"] / "a.wav", clips["frames"], tgt_text="")])
    task = setup_task(tmp_path, tiny_models)
    with pytest.raises(ManifestError) as error:
        task.load_dataset("train,train_b")
    lines = str(error.value).splitlines()
    assert lines[0] == "split 'train,train_b': 25 of 28 manifest rows cannot be used (checked from the audio " \
                       "headers before training or decoding):"
    listed = lines[1:1 + manifest_check.SHOWN]
    assert listed[0] == f"  {tsv}:4 id 'u2' field 'audio': file not found: {clips['root'] / 'missing0.wav'}"
    assert [line.split(" id ")[0] for line in listed] == [f"  {tsv}:{n}" for n in range(4, 24)]
    assert lines[1 + manifest_check.SHOWN] == "  ... and 5 more problems; --skip-bad-rows writes them all to a file"
    assert lines[-1].startswith("Fix these rows") and "--skip-bad-rows" in lines[-1]
    assert "train_b.tsv" not in str(error.value)  # 21st problem onwards: counted, not listed


def test_skip_bad_rows_leaves_them_out_and_lists_them_beside_the_checkpoints(clips, tiny_models, tmp_path):
    tsv = mixed_manifest(clips, tmp_path, 3)
    save = tmp_path / "ckpt"
    task = setup_task(tmp_path, tiny_models, "--skip-bad-rows", "--save-dir", str(save))
    task.load_dataset("train")
    dataset = task.dataset("train")
    assert [os.path.basename(p) for p in dataset.audio_paths] == ["a.wav", "a.flac", "a.mp3"]
    listed = (save / "bad_rows_train.tsv").read_text().splitlines()
    assert listed[0] == "manifest\tline\tid\tfield\treason"
    assert [line.split("\t")[:4] for line in listed[1:]] == [[str(tsv), str(n), f"u{n - 2}", "audio"] for n in (4, 5, 6)]
    assert dataset.describe_row(2) == f"{tsv}:7"  # the mp3's row, after the skipped ones

    mixed_manifest(clips, tmp_path, 0)  # now all good: the list says so
    task.load_dataset("train")
    assert (save / "bad_rows_train.tsv").read_text().splitlines() == [listed[0]]


def test_verdict_is_cached_until_the_manifest_changes(clips, tmp_path, monkeypatch):
    """The second check of an unchanged manifest reads no header; a new mtime checks again. Where
    the manifest's directory cannot take the cache file, it goes to $XDG_CACHE_HOME."""
    tsv = mixed_manifest(clips, tmp_path, 2)
    headers = []
    real = manifest_check._header
    monkeypatch.setattr(manifest_check, "_header", lambda *a: headers.append(a[0]) or real(*a))
    needs = Needs(("tgt_text",))
    first = check_manifest(tsv, read_rows(tsv), tmp_path, needs)
    assert len(headers) == 5 and [p.row for p in first.problems] == [2, 3]
    assert check_manifest(tsv, read_rows(tsv), tmp_path, needs) == first and len(headers) == 5
    assert check_manifest(tsv, read_rows(tsv), tmp_path, Needs(("src_text",))) == first and len(headers) == 10
    stat = os.stat(tsv)
    os.utime(tsv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    assert check_manifest(tsv, read_rows(tsv), tmp_path, needs) == first and len(headers) == 15
    assert json.loads((tmp_path / "train.tsv.llast-check.json").read_text())["key"]["mtime_ns"] == os.stat(tsv).st_mtime_ns

    beside = tmp_path / "train.tsv.llast-check.json"
    beside.unlink()
    beside.mkdir()  # a path the cache cannot be written to (the tests run as root: chmod would not do)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    check_manifest(tsv, read_rows(tsv), tmp_path, needs)
    check_manifest(tsv, read_rows(tsv), tmp_path, needs)
    assert len(headers) == 20
    assert len(list((tmp_path / "home-cache" / "llast_fairseq" / "manifest-checks").glob("train.tsv.*.json"))) == 1


def test_decoded_length_that_disagrees_with_the_row_names_it(clips, tiny_models, tmp_path):
    """A clip changed after its (cached) check, and an mp3 cut off after its header (which still
    counts the whole clip: only decoding finds it), fail when decoded, naming the manifest row."""
    speech, rate = sf.read(clips["root"] / "a.wav")
    sf.write(tmp_path / "a.wav", speech, rate)
    mp3 = (clips["root"] / "a.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(mp3[:len(mp3) // 3])
    assert sf.info(tmp_path / "cut.mp3").frames == clips["frames"]
    tsv = write_manifest(tmp_path, "train", [row(tmp_path / "a.wav", clips["frames"]),
                                             row(tmp_path / "cut.mp3", clips["frames"])])
    task = setup_task(tmp_path, tiny_models)
    task.load_dataset("train")
    dataset = task.dataset("train")
    assert dataset.n_frames.tolist() == [clips["frames_16k"]] * 2  # sizes at 16 kHz
    assert dataset[0]["waveform"].numel() == clips["frames_16k"]
    with pytest.raises(ValueError, match=rf"^{re.escape(f'{tsv}:3: {tmp_path}/cut.mp3')} decodes to \d+ samples "
                                         rf"at 16 kHz where its row says {clips['frames_16k']}"):
        dataset[1]
    sf.write(tmp_path / "a.wav", speech[: len(speech) // 2], rate)  # the manifest is unchanged: cached
    task.load_dataset("train")
    with pytest.raises(ValueError, match=rf"^{re.escape(f'{tsv}:2: {tmp_path}/a.wav')} decodes to "
                                         rf"{resampled_length(len(speech) // 2, rate)} samples"):
        task.dataset("train")[0]


def test_concurrent_loads_of_one_manifest_check_it_once(clips, tmp_path, monkeypatch):
    """Two loads at once (ranks of one node; here two threads, each with its own lock on the
    manifest): one checks, the other waits and reads its verdict."""
    import threading

    tsv = mixed_manifest(clips, tmp_path, 1)
    headers = []
    real = manifest_check._header
    monkeypatch.setattr(manifest_check, "_header", lambda *a: headers.append(a[0]) or time.sleep(0.05) or real(*a))
    rows, verdicts = read_rows(tsv), []
    loads = [threading.Thread(target=lambda: verdicts.append(check_manifest(tsv, rows, tmp_path, Needs(("tgt_text",)))))
             for _ in range(2)]
    for load in loads:
        load.start()
    for load in loads:
        load.join()
    assert len(headers) == 4 and verdicts[0] == verdicts[1] and [p.row for p in verdicts[0].problems] == [2]
