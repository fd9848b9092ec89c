from setuptools import find_packages, setup

setup(
    name="llast-fairseq",
    version="0.1.0",
    description="LLaST (LLM-based speech translation) as a fairseq plugin: --user-dir llast_fairseq --task llast_st",
    packages=find_packages(include=["llast_fairseq", "llast_fairseq.*"]),
    python_requires=">=3.10",
    # torch, ve-fairseq and openai-whisper are installed by scripts/install.sh (CPU wheel, no torchaudio);
    # everything else is pinned in requirements.txt.
    install_requires=[
        "torch==2.13.0",
        "ve-fairseq==0.12.3",
        "openai-whisper==20250625",
        "transformers==5.24.0",
        "peft==0.21.2",
        "sentencepiece==0.2.3",
        "sacrebleu[ja]==2.5.1",
        "tensorboardX==2.6.5",
        "omegaconf==2.3.0",
        "soundfile==0.14.0",
        "soxr==1.1.0",
        "PyYAML==6.0.4",
        "tqdm==4.70.1",
    ],
    entry_points={"console_scripts": [
        "llast-convert-ctranslate2-whisper = llast_fairseq.cli.convert_ctranslate2_whisper:main",
        "llast-make-tiny-models = llast_fairseq.cli.make_tiny_models:main",
        "llast-benchmark = llast_fairseq.cli.benchmark:main",
        "llast-memory = llast_fairseq.cli.memory:main",
        "llast-evaluate = llast_fairseq.cli.evaluate:main",
        "llast-text-prompt-bleu = llast_fairseq.cli.text_prompt_bleu:main",
        "llast-prep-covost2 = llast_fairseq.cli.prep_covost2:main",
        "llast-prep-fleurs = llast_fairseq.cli.prep_fleurs:main",
        "llast-make-corpus = llast_fairseq.cli.make_corpus:main",
        "llast-export = llast_fairseq.cli.export:main",
        "llast-translate = llast_fairseq.cli.translate:main",
        "llast-experiment = llast_fairseq.cli.experiment:main",
    ]},
)
