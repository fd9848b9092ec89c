"""Cross-entropy over target tokens + EOS only, with optional label smoothing and token accuracy.

The decoder returns logits for target positions only (prompt and audio positions never leave
it), so this is fairseq's label-smoothed cross-entropy with accuracy reporting on, plus a check
that logits and targets line up one to one.
"""
from dataclasses import dataclass, field

from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.dataclass import FairseqDataclass
from omegaconf import II


@dataclass
class LlastCrossEntropyConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing epsilon (0 = plain cross-entropy)"})
    sentence_avg: bool = II("optimization.sentence_avg")


@register_criterion("llast_cross_entropy", dataclass=LlastCrossEntropyConfig)
class LlastCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing):
        super().__init__(task, sentence_avg, label_smoothing, report_accuracy=True)

    def compute_loss(self, model, net_output, sample, reduce=True):
        logits, target = net_output[0], sample["target"]
        if logits.shape[:2] != target.shape:
            raise RuntimeError(f"logits {tuple(logits.shape)} do not line up with targets {tuple(target.shape)}")
        return super().compute_loss(model, net_output, sample, reduce)
