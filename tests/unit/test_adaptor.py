"""Adaptors: the paper's MLP with frame stacking against stacking by hand, and the registry."""
from types import SimpleNamespace

import pytest
import torch

from llast_fairseq.models.adaptor import ADAPTORS, Adaptor, MLPAdaptor, build_adaptor, register_adaptor


def stack_by_hand(states: torch.Tensor, k: int) -> torch.Tensor:
    """``[T, D] -> [ceil(T / k), k * D]``: group j is frames jk, jk+1, ..., jk+k-1 side by side,
    zeros past the end."""
    steps, dim = states.shape
    frames = [states[i] if i < steps else torch.zeros(dim) for i in range(-(-steps // k) * k)]
    return torch.stack([torch.cat(frames[j : j + k]) for j in range(0, len(frames), k)])


@pytest.mark.parametrize("k", [1, 3])
def test_mlp_adaptor_stacks_frames_in_order_then_runs_the_mlp(k):
    torch.manual_seed(0)
    adaptor = MLPAdaptor(input_dim=4, output_dim=6, frame_stack=k)
    states, lengths = torch.randn(2, 7, 4), torch.tensor([7, 5])
    out, out_lengths = adaptor(states, lengths)
    assert adaptor.output_dim == 6 and out.shape == (2, -(-7 // k), 6)
    assert out_lengths.tolist() == [-(-7 // k), -(-5 // k)]
    for row in range(2):
        torch.testing.assert_close(out[row], adaptor.layers(stack_by_hand(states[row], k)))
    # the paper's Linear-GELU-Linear-GELU-Linear, under the parameter names checkpoints hold
    assert [type(m).__name__ for m in adaptor.layers] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert sorted(adaptor.state_dict()) == [f"layers.{i}.{p}" for i in (0, 2, 4) for p in ("bias", "weight")]
    assert adaptor.layers[0].in_features == 4 * k


def test_build_adaptor_by_name_and_its_errors():
    adaptor = build_adaptor(SimpleNamespace(adaptor="mlp", frame_stack=2), 4, 6)
    assert isinstance(adaptor, MLPAdaptor) and adaptor.frame_stack == 2
    with pytest.raises(ValueError, match=r"--adaptor 'nope' is not registered; choose one of \[.*'mlp'"):
        build_adaptor(SimpleNamespace(adaptor="nope", frame_stack=1), 4, 6)
    with pytest.raises(ValueError, match="--frame-stack must be >= 1, got 0"):
        build_adaptor(SimpleNamespace(adaptor="mlp", frame_stack=0), 4, 6)
    with pytest.raises(ValueError, match="'mlp' is registered twice"):
        register_adaptor("mlp")(MLPAdaptor)


def test_an_adaptor_whose_width_is_not_the_llms_is_refused():
    @register_adaptor("test-narrow")
    class Narrow(Adaptor):
        @classmethod
        def build(cls, cfg, input_dim, output_dim):
            return cls(output_dim - 1)

    try:
        with pytest.raises(ValueError, match="'test-narrow' gives 5-wide states where the LLM embeds tokens in 6"):
            build_adaptor(SimpleNamespace(adaptor="test-narrow"), 4, 6)
    finally:
        del ADAPTORS["test-narrow"]
