"""Text encoder: bundled MiniLM, [CLS] of the last three layers, clear errors."""

import pytest
import torch

from yofo.errors import ConfigError, InputError
from yofo.model.text_encoder import TextEncoder


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder("all-MiniLM-L6-v2", out_dim=32, max_tokens=8)


def test_three_projected_cls_vectors(encoder):
    encoder.train()  # dropout stays off: features are deterministic
    z = encoder(["the red circle", "the square moving left"])
    assert z.shape == (2, 3, 32)
    assert torch.equal(z, encoder(["the red circle", "the square moving left"]))
    assert not torch.allclose(z[0], z[1])
    hidden = encoder.bert(**encoder.tokenizer(["the red circle"], return_tensors="pt"), output_hidden_states=True)
    expected = encoder.proj[0](hidden.hidden_states[-3][:, 0])
    torch.testing.assert_close(z[:1, 0], expected)


def test_empty_text_is_an_error(encoder):
    with pytest.raises(InputError, match="non-empty"):
        encoder(["the dog", "   "])
    with pytest.raises(InputError):
        encoder([])


def test_long_text_is_truncated_with_a_one_line_warning(encoder, caplog):
    long = "the very large and extremely shiny red circle on the far left moving slowly"
    with caplog.at_level("WARNING", logger="yofo"):
        z = encoder(["a dog", long])
    assert z.shape == (2, 3, 32)
    count = len(encoder.tokenizer(long)["input_ids"])
    assert count > 8
    assert caplog.messages == [f"sentence 2 has {count} tokens; only the first 8 are used"]


def test_unavailable_model_names_the_config_key(tmp_path):
    with pytest.raises(ConfigError, match="model.text_encoder.name") as err:
        TextEncoder("bert-base-uncased", out_dim=8)
    assert "local" in str(err.value)
    with pytest.raises(ConfigError):
        TextEncoder(str(tmp_path / "no-such-model"), out_dim=8)


def test_mean_pooling_averages_real_tokens_only(encoder):
    mean = TextEncoder("all-MiniLM-L6-v2", out_dim=32, max_tokens=8, pooling="mean")
    mean.proj.load_state_dict(encoder.proj.state_dict())
    # padding must not change a sentence's features: alone vs. batched with a longer sentence
    alone = mean(["the red circle"])
    batched = mean(["the red circle", "the small square moving left"])
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-5)
    tokens = mean.tokenizer(["the red circle"], return_tensors="pt")
    hidden = mean.bert(**tokens, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(alone[0, 2], mean.proj[2](hidden[0].mean(0)))
    assert not torch.allclose(alone, encoder(["the red circle"]))


def test_bundled_cls_is_sentence_independent_in_middle_layers(encoder):
    # why demo.yaml and tiny.yaml use pooling=mean: MiniLM's [CLS] at layers 4-5 ignores the sentence
    tokens = encoder.tokenizer(["the red circle", "the blue square moving up"], padding=True, return_tensors="pt")
    hidden = encoder.bert(**tokens, output_hidden_states=True).hidden_states
    cls = torch.nn.functional.cosine_similarity(hidden[-3][0, 0], hidden[-3][1, 0], dim=0)
    mask = tokens["attention_mask"].unsqueeze(-1)
    mean = (hidden[-3] * mask).sum(1) / mask.sum(1)
    assert cls > 0.99
    assert torch.nn.functional.cosine_similarity(mean[0], mean[1], dim=0) < 0.95


def test_layers_pick_the_hidden_layer_of_each_scale(encoder):
    last = TextEncoder("all-MiniLM-L6-v2", out_dim=32, max_tokens=8, layers=(-1, -1, -1))
    last.proj.load_state_dict(encoder.proj.state_dict())
    ours, paper = last(["the red circle"]), encoder(["the red circle"])
    torch.testing.assert_close(ours[0, 2], paper[0, 2])  # the coarse scale reads the last layer in both
    tokens = last.tokenizer(["the red circle"], return_tensors="pt")
    cls = last.bert(**tokens, output_hidden_states=True).hidden_states[-1][0, 0]
    torch.testing.assert_close(ours[0, 0], last.proj[0](cls))
    assert not torch.allclose(ours[0, 0], paper[0, 0])
    with pytest.raises(ConfigError, match="layers"):
        TextEncoder("all-MiniLM-L6-v2", out_dim=8, layers=(-1, -7, -1))
