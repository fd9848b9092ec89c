"""Loading a trained model: fairseq's checkpoint loader, the task's build_model, the saved config.

A checkpoint holds what was trained and the configs fairseq-train saved; the frozen base models
are rebuilt from the paths those configs name (or from ``llm_path`` / ``whisper_path`` given here).
An export (:mod:`llast_fairseq.export`) is such a checkpoint too, and loads the same way.
"""
import os
from typing import Optional

from fairseq import checkpoint_utils


def load_checkpoint(path: str, llm_path: Optional[str] = None, whisper_path: Optional[str] = None):
    """``(model, task, state)`` from a checkpoint, through fairseq's own loader; ``state`` is the
    checkpoint as fairseq read it (``state["cfg"]``: the saved configs).

    ``llm_path`` / ``whisper_path`` replace the base-model paths saved in the checkpoint (needed
    when they were moved, or were relative to another working directory).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    overrides = {k: str(v) for k, v in {"llm_path": llm_path, "whisper_path": whisper_path}.items() if v}
    state = checkpoint_utils.load_checkpoint_to_cpu(path, overrides)
    saved = state["cfg"]
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], state=state)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}\n{path} was trained with llm_path={saved.task.llm_path!r} and whisper_path="
            f"{saved.model.whisper_path!r}: pass llm_path=/whisper_path= (--llm-path/--whisper-path) "
            "where those base models are now") from e
    return models[0], task, state
