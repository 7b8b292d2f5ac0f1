"""The assembled network: paper-size forward/backward, every Table 3 variant, streaming, bad input; motion-aware FM."""

from collections import deque

import pytest
import torch

from yofo.config import load_config
from yofo.errors import ConfigError, InputError
from yofo.model.fusion import l2_normalize
from yofo.model.motion import local_correlation, soft_argmax
from yofo.model.yofo import build_model

TEXTS = ["the red circle", "the square moving left"]
VARIANTS = {  # Table 3 of the paper, as config switches
    "YOFO": [],
    "FM-baseline": ["model.fm.mode=baseline"],
    "FM-SS": ["model.fm.mode=single_scale"],
    "FM-Cat": ["model.fm.fusion=concat"],
    "w/o MT": ["model.meta_transfer.enabled=false"],
    "w/o memory": ["model.memory.size=1"],
    "literal strides": ["model.fm.strides=[2,2,2]"],
}


@pytest.fixture(scope="module")
def tiny(random_model):
    return random_model().eval()


def _clip(batch=2, frames=3, seed=0, size=(64, 96)):
    return torch.randn(batch, frames, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_ablation_variant_runs_forward_and_backward(name, random_model):
    model = random_model(overrides=VARIANTS[name]).train()
    logits = model(_clip(frames=2), TEXTS)
    assert logits.shape == (2, 2, 1, 64, 96)
    logits.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    assert grads["feature_mining.label_head.weight"].abs().sum() > 0
    assert grads["decoder.out_conv.weight"].abs().sum() > 0
    if model.meta_transfer is not None:
        assert grads["meta_transfer.reg"].abs() > 0


def test_paper_config_at_full_size_trains_on_cpu(random_model):
    model = random_model("paper", ["model.text_encoder.name=all-MiniLM-L6-v2"]).train()
    model.image_encoder.requires_grad_(False)  # stage 1; keeps the test's backward pass affordable
    frames = torch.randn(1, 4, 3, 480, 864)
    logits = model(frames, ["the dog on the left running towards the camera"])
    assert logits.shape == (1, 4, 1, 480, 864)
    logits.square().mean().backward()
    for name in ("feature_mining.fuse.0.aca.query_l.body.0.weight", "feature_mining.weight_head.weight",
                 "meta_transfer.phi.weight", "meta_transfer.reg", "decoder.tse.0.reduce.0.weight",
                 "decoder.out_conv.weight", "text_encoder.proj.2.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_same_seed_same_output(random_model):
    clip = _clip(batch=1)
    with torch.no_grad():
        a = random_model(seed=3).eval()(clip, TEXTS[:1])
        b = random_model(seed=3).eval()(clip, TEXTS[:1])
        c = random_model(seed=4).eval()(clip, TEXTS[:1])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _streaming_equals_clip(model, frames):
    """Assert that streaming ``frames`` frames one by one gives exactly the clip forward; return the state."""
    clip = _clip(batch=1, frames=frames)
    with torch.no_grad():
        offline = model.eval()(clip, TEXTS[:1])
        state = model.start(TEXTS[:1])
        online = torch.stack([model.step(clip[0, t], state) for t in range(frames)], dim=1)
    assert torch.equal(online, offline)
    return state


def test_streaming_equals_clip_forward_in_eval_mode(tiny):
    state = _streaming_equals_clip(tiny, 5)
    assert len(state.memory) == 3 and state.frames_seen == 5


def _k_together_and_apart(model):
    """Stream TEXTS together and each alone over one clip; assert they agree; return the joint state."""
    clip = _clip(batch=1, frames=4)[0]
    with torch.no_grad():
        text = model.encode_text(TEXTS)
        state = model.start(text)
        joint = torch.stack([model.step(frame, state) for frame in clip], dim=1)
        for k in range(2):
            single = model.start(text[k : k + 1])
            alone = torch.stack([model.step(frame, single) for frame in clip], dim=1)
            # different but equivalent conv paths (dense vs grouped): float32 rounding through 20 solver steps
            torch.testing.assert_close(joint[k : k + 1], alone, rtol=1e-2, atol=5e-3)
    return state


def test_k_expressions_share_one_pass_and_match_separate_runs(tiny):
    state = _k_together_and_apart(tiny)
    assert state.memory[0][0].shape[0] == 1  # Φ stored once for both expressions


@pytest.mark.parametrize("overrides", [[], ["model.fm.motion.window=2"]], ids=["paper", "motion FM"])
def test_a_clip_shared_by_paired_expressions_equals_the_clip_given_twice(overrides, random_model):
    """Training with paired expressions encodes each pair's frames once; outputs and gradients are unchanged."""
    model = random_model(overrides=overrides).train()
    clips, texts = _clip(batch=2, frames=2), TEXTS + TEXTS[::-1]  # clip 0 for texts 0-1, clip 1 for 2-3
    runs = []
    for frames in (clips, clips.repeat_interleave(2, dim=0)):
        model.zero_grad()
        logits, labels = model(frames, texts, label_logits=True)
        (logits.square().mean() + labels.square().mean()).backward()
        runs.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (shared, shared_grads), (twice, twice_grads) = runs
    assert shared.shape == (4, 2, 1, 64, 96) and torch.allclose(shared, twice, atol=1e-5)
    assert shared_grads.keys() == twice_grads.keys() and "image_encoder.conv1.weight" in shared_grads
    for name, grad in shared_grads.items():
        other = twice_grads[name]  # float32 sums in another order: compare to the gradient's own scale
        assert (grad - other).abs().max() <= 1e-4 * other.abs().max() + 1e-7, name


def test_bad_inputs_raise_clear_errors(tiny):
    with pytest.raises(InputError, match=r"\(B, T, 3, H, W\)"):
        tiny(torch.randn(2, 3, 64, 96), TEXTS)
    with pytest.raises(InputError, match="RGB"):
        tiny(torch.randn(2, 1, 4, 64, 96), TEXTS)
    with pytest.raises(InputError, match="multiples of 32"):
        tiny(torch.randn(2, 1, 3, 90, 96), TEXTS)
    with pytest.raises(InputError, match="2 expressions for 3 clips"):
        tiny(torch.randn(3, 1, 3, 64, 96), TEXTS)
    with pytest.raises(InputError, match="non-empty"):
        tiny.start(["the dog", ""])
    with pytest.raises(InputError, match="batch"):
        tiny.step(torch.randn(3, 3, 64, 96), tiny.start(TEXTS))


def test_lite_streams_exactly_as_its_clip_forward():
    """EfficientNet-Lite with its ImageNet weights (its "SAME" padding and ReLU6) in the whole network."""
    torch.manual_seed(0)
    _streaming_equals_clip(build_model(load_config("lite", ["model.input_size=[64,96]"]).model), 4)


# ------------------------------------------------------------------ motion-aware feature mining (ours)
MOTION = ["model.fm.motion.window=4"]


def _with_motion(random_model, overrides=(), seed=0):
    """A model with motion on whose motion weights are not zero (as after training; they start at zero)."""
    model = random_model(overrides=[*MOTION, *overrides], seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        zero_init = [block.mm_motion.weight for block in model.feature_mining.fuse.values()]
        if model.meta_transfer is not None:
            zero_init.append(model.meta_transfer.phi_motion.weight)
        for weight in zero_init:
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    return model


@pytest.fixture(scope="module")
def moving(random_model):
    return _with_motion(random_model).eval()


def test_streaming_equals_clip_forward_exactly(moving):
    state = _streaming_equals_clip(moving, 6)
    assert len(state.motion) == 4


def test_the_motion_map_is_on_the_scale_of_the_image_feature(moving):
    """Mo_t is L2-normalised per position like V_i, whatever the scale of the encoder's layer2."""
    layer2 = torch.randn(1, moving.image_encoder.channels[1], 8, 12, generator=torch.Generator().manual_seed(1))
    history = deque(maxlen=4)
    for scale in (1.0, 30.0):
        norms = moving.feature_mining.motion(layer2 * scale, history).norm(dim=1)
        assert torch.allclose(norms[norms > 0], torch.ones(()), atol=1e-5) and (norms > 0).float().mean() > 0.5


def test_motion_changes_the_output_and_depends_on_past_frames(moving):
    clip = _clip(batch=1, frames=4)
    with torch.no_grad():
        y = [moving(c, TEXTS[:1])[:, -1] for c in (clip, torch.cat([clip[:, :1].expand(-1, 3, -1, -1, -1),
                                                                   clip[:, -1:]], dim=1))]
        silent = [b.mm_motion.weight.clone() for b in moving.feature_mining.fuse.values()]
        for b in moving.feature_mining.fuse.values():
            b.mm_motion.weight.zero_()
        plain = moving(clip, TEXTS[:1])[:, -1]
        for b, w in zip(moving.feature_mining.fuse.values(), silent):
            b.mm_motion.weight.copy_(w)
    assert not torch.allclose(y[0], plain)  # motion enters the fusion
    assert not torch.equal(y[0], y[1])  # the last frame's output depends on the frames before it


def test_the_solver_input_reads_the_motion_map(moving):
    """Φ sees the motion map too, so that θ can tell apart two objects that differ only by how they move."""
    with torch.no_grad():
        layers = moving.image_encoder(_clip(batch=1, frames=1)[:, 0])
        still = moving.feature_mining.motion_map(layers.layer2)
        moved = moving.feature_mining.motion_map(layers.layer2.roll(2, dims=-1), deque([l2_normalize(layers.layer2)]))
        phi = [moving.meta_transfer.features(layers.layer3, m) for m in (still, moved)]
    assert phi[0].shape == (1, moving.cfg.meta_transfer.feature_dim, *layers.layer3.shape[-2:])
    assert not torch.allclose(phi[0], phi[1])


def test_state_size_is_constant_over_a_long_stream(moving):
    frame = _clip(batch=1, frames=1, size=(32, 64))[0, 0]

    def numel(state):
        tensors = [t for entry in state.memory for t in entry] + list(state.motion) + [state.filters]
        return sum(t.numel() for t in tensors)

    state = moving.start(TEXTS)
    sizes = []
    with torch.no_grad():
        for t in range(50):
            moving.step(frame + 0.05 * t, state)
            sizes.append((numel(state), len(state.motion), len(state.memory)))
    assert len(state.motion) == 4 and state.motion[0].shape[0] == 1  # ring of W, stored once for the K sentences
    assert len(set(sizes[4:])) == 1 and sizes[-1] == sizes[4]


def test_k_sentences_together_equal_k_separate_runs(moving):
    state = _k_together_and_apart(moving)
    assert state.motion[-1].shape[0] == 1  # the motion map's input is computed once per frame


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "literal strides"])
def test_every_table3_variant_runs_forward_and_backward_with_motion(name, random_model):
    model = _with_motion(random_model, VARIANTS[name]).train()
    logits = model(_clip(frames=3), TEXTS)
    assert logits.shape == (2, 3, 1, 64, 96)
    logits.square().mean().backward()
    grads = dict(model.named_parameters())
    motion = [n for n in grads if n.startswith("feature_mining.motion.") or n.endswith("_motion.weight")]
    assert any("phi_motion" in n for n in motion) == (model.meta_transfer is not None)
    assert motion and all(grads[n].grad is not None and grads[n].grad.abs().sum() > 0 for n in motion)
    _streaming_equals_clip(model, 3)  # and in eval mode (ACM's cheaper order), streaming still equals the clip


def test_off_in_paper_and_by_default_and_the_paper_model_is_unchanged():
    for name in (None, "paper", "tiny", "demo-scratch"):
        assert load_config(name).model.fm.motion.window == 0
    assert load_config("demo").model.fm.motion.window == 2  # the shipped recipe (ours)
    plain = build_model(load_config("tiny").model).state_dict()
    assert not any("motion" in key for key in plain)
    on = build_model(load_config("tiny", MOTION).model).state_dict()
    added = set(on) - set(plain)
    assert set(plain) <= set(on) and added and all("motion" in key for key in added)


@pytest.mark.parametrize("override", ["window=1", "window=-2", "radius=0"])
def test_bad_window_or_radius_is_a_config_error(override):
    with pytest.raises(ConfigError, match="model.fm.motion"):
        load_config("tiny", ["model.fm.motion.window=2", f"model.fm.motion.{override}"])


@pytest.mark.parametrize("shift", [(2, -1), (0, 0), (-3, 3)])
def test_the_cost_volume_finds_where_the_content_was(shift):
    """Content moved by (dx, dy) between two frames: the soft-argmax points back to (−dx, −dy) inside the frame."""
    dx, dy = shift
    past = l2_normalize(torch.randn(2, 32, 16, 20, generator=torch.Generator().manual_seed(0)))
    current = torch.roll(past, shifts=(dy, dx), dims=(2, 3))
    flow = soft_argmax(local_correlation(current, past, 3), 3)
    inside = flow[:, :, 4:-4, 4:-4]
    assert torch.allclose(inside[:, 0], torch.full_like(inside[:, 0], -dx), atol=1e-3)
    assert torch.allclose(inside[:, 1], torch.full_like(inside[:, 1], -dy), atol=1e-3)


# ------------------------------------------------------------- ours: FiLM fusion and the label skip
OURS = ["model.fm.text_film=true", "model.decoder.label_skip=true"]


def test_ours_are_off_in_the_paper_and_add_only_the_film_layers():
    for name in (None, "paper", "tiny"):
        cfg = load_config(name).model
        assert not cfg.fm.text_film and not cfg.decoder.label_skip
    plain = build_model(load_config("tiny").model).state_dict()
    ours = build_model(load_config("tiny", OURS).model).state_dict()
    added = set(ours) - set(plain)
    assert set(plain) <= set(ours) and added and all(".mm_film." in key for key in added)


@pytest.mark.parametrize("name", ["YOFO", "w/o MT"])
def test_label_skip_adds_the_upsampled_readout_of_the_decoder_input(name, random_model):
    skip = random_model(overrides=["model.decoder.label_skip=true", *VARIANTS[name]]).eval()
    plain = random_model(overrides=VARIANTS[name]).eval()
    plain.load_state_dict(skip.state_dict())
    clip = _clip(batch=1, frames=2)
    with torch.no_grad():
        torch.nn.init.normal_(skip.feature_mining.label_readout.weight)
        plain.feature_mining.label_readout.weight.copy_(skip.feature_mining.label_readout.weight)
        inputs = []
        hook = plain.decoder.register_forward_pre_hook(lambda module, args: inputs.append(args[1]))
        expected = plain(clip, TEXTS[:1])
        hook.remove()
        coarse = torch.stack([plain.feature_mining.label_readout(x) for x in inputs], dim=1)  # (1, T, 1, h, w)
        coarse = torch.nn.functional.interpolate(coarse.flatten(0, 1), size=(64, 96), mode="bilinear")
        expected = expected + coarse.view_as(expected)
        torch.testing.assert_close(skip(clip, TEXTS[:1]), expected)
    _streaming_equals_clip(skip, 3)


def test_every_table3_variant_trains_with_ours_on(random_model):
    for name in [n for n in VARIANTS if n != "literal strides"]:
        model = random_model(overrides=[*OURS, *VARIANTS[name]]).train()
        model(_clip(frames=2), TEXTS).square().mean().backward()
        readout = model.feature_mining.label_readout.weight.grad
        assert readout is not None and readout.abs().sum() > 0, name


@pytest.mark.parametrize("window", [2, 4])
def test_frames_with_their_past_see_the_motion_of_the_whole_video(window, random_model):
    """``previous`` (``data.motion_history``): frames drawn with gaps, each given the W − 1 video frames before
    it, get the motion maps that streaming the whole video gives them. Without meta-transfer (whose memory
    holds the clip's frames only) the logits are then the stream's bit for bit, for one sentence and for two
    sharing a clip."""
    model = _with_motion(random_model, ["model.meta_transfer.enabled=false", f"model.fm.motion.window={window}"]).eval()
    video = _clip(batch=1, frames=8)
    picked = [1, 6]  # frame 1's past starts before the video: the first frame repeated, as in streaming
    previous = torch.stack([torch.stack([video[0, max(0, t - k)] for k in range(window - 1, 0, -1)]) for t in picked])
    with torch.no_grad():
        for texts in (TEXTS[:1], TEXTS):
            streamed = model(video, texts)[:, picked]
            drawn = model(video[:, picked], texts, previous=previous[None])
            assert torch.equal(drawn, streamed)
            assert not torch.allclose(model(video[:, picked], texts), streamed, atol=1e-3)  # frame 6 vs frame 1


def test_bad_previous_frames_raise_clear_errors(random_model, tiny):
    model = _with_motion(random_model)
    with pytest.raises(InputError, match=r"expected shape \(2, 3, 3, 3, 64, 96\)"):
        model(_clip(), TEXTS, previous=_clip(frames=3)[:, :, None])
    with pytest.raises(InputError, match="only a model with motion-aware feature mining"):
        tiny(_clip(), TEXTS, previous=_clip()[:, :, None])
