import math

import numpy as np
import pytest
import torch

from procmem.envs.minipacman import EVENTS, PILL_POWER, MiniPacman
from procmem.models.env_model import EnvModel, PoolAndInject
from procmem.models.env_model_loss import rollout_accuracy
from procmem.models.fused_kernels import first_argmax, tap_sums
from procmem.models.pixel_classes import (
    EDIBLE_GHOST,
    GHOST,
    PIXEL_CLASSES,
    class_frames,
    frame_classes,
)

METRICS = ("pixel_accuracy", "frame_accuracy", "event_accuracy", "reward_accuracy")


def collect(num_envs: int = 8, steps: int = 4, seed: int = 0):
    """Transitions under random actions, ``info["final_obs"]`` as the next frame (so every
    transition is real): frames, actions, next frames, events, all stacked step-major,
    and the reward vector."""
    env = MiniPacman(num_envs=num_envs)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames, actions, next_frames, events = [], [], [], []
    for _ in range(steps):
        action = rng.integers(0, env.num_actions, num_envs)
        next_obs, _, _, _, info = env.step(action)
        frames.append(obs)
        actions.append(action)
        next_frames.append(info["final_obs"])
        events.append(info["events"])
        obs = next_obs
    stacked = (torch.as_tensor(np.concatenate(x)) for x in (frames, actions, next_frames, events))
    return (*stacked, torch.as_tensor(env.reward_vector))


def test_round_trip_on_env_frames():
    env = MiniPacman(num_envs=16)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    seen = torch.zeros(len(PIXEL_CLASSES), dtype=torch.bool)
    for step in range(40):
        if step % 10 == 5:  # force the pill timer on some envs and render again
            env.power[:] = rng.integers(0, PILL_POWER + 1, env.num_envs)
            env.load_state_dict(env.state_dict())  # redraws the frames
            obs = env.observe()
        frames = torch.as_tensor(obs)
        classes = frame_classes(frames)
        assert classes.dtype == torch.int64 and classes.shape == (16, 15, 19)
        power = torch.as_tensor(env.power)
        assert torch.equal(class_frames(classes, power=power), frames)
        seen[classes.unique()] = True
        # Ghosts are edible exactly where the timer runs (unless Pacman hides them).
        edible = (classes == EDIBLE_GHOST).flatten(1).any(1)
        dangerous = (classes == GHOST).flatten(1).any(1)
        assert not (edible & (power == 0)).any() and not (dangerous & (power > 0)).any()
        # Without a power, edible ghosts get green 1 and nothing else changes.
        full = class_frames(classes)
        differ = (full != frames).any(1)
        assert torch.equal(differ, (classes == EDIBLE_GHOST) & (power < PILL_POWER)[:, None, None])
        obs = env.step(rng.integers(0, env.num_actions, env.num_envs))[0]
    assert seen.all()


def test_every_class_in_a_crafted_frame():
    colours = [(0, 0, 0), (1, 1, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0.35, 0)]
    frame = torch.zeros(1, 3, 15, 19)
    for col, colour in enumerate(colours):
        frame[0, :, 0, col] = torch.tensor(colour)
    classes = frame_classes(frame)
    names = [PIXEL_CLASSES[i] for i in classes[0, 0, : len(colours)]]
    assert names == ["empty", "wall", "food", "pill", "pacman", "ghost", "edible_ghost"]
    assert torch.equal(class_frames(classes, power=7), frame)
    assert class_frames(classes)[0, :, 0, 6].tolist() == [1.0, 1.0, 0.0]


def test_shapes(one_torch_thread):
    torch.manual_seed(0)
    frames, actions, next_frames, events, rewards = collect(num_envs=4, steps=1)
    model = EnvModel(5, channels=8, blocks=2, event_coef=1.0)
    pixel_logits, event_logits = model(frames, actions)
    assert pixel_logits.shape == (4, len(PIXEL_CLASSES), 15, 19)
    assert event_logits.shape == (4, len(EVENTS), 2)
    predicted, counts = model.predict(frames, actions)
    assert predicted.shape == frames.shape and counts.shape == (4, len(EVENTS))
    assert torch.equal(class_frames(frame_classes(predicted)), predicted)
    loss, metrics = model.loss(frames, actions, next_frames, events, reward_vector=rewards)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(metrics) >= {f"envmodel/{name}" for name in METRICS}
    assert all(0.0 <= metrics[f"envmodel/{name}"] <= 1.0 for name in METRICS)
    model = EnvModel(5, channels=8, blocks=2, event_coef=1.0, max_count=3)
    assert model(frames, actions)[1].shape == (4, len(EVENTS), 4)


def test_masked_transitions_change_nothing(one_torch_thread):
    torch.manual_seed(0)
    frames, actions, next_frames, events, rewards = collect(num_envs=6, steps=1)
    model = EnvModel(5, channels=8, blocks=2, event_coef=1.0)
    mask = torch.tensor([True, False, True, False, True, True])
    loss, metrics = model.loss(frames, actions, next_frames, events, mask, rewards)
    garbage = ~mask
    frames2, next2, events2, actions2 = (x.clone() for x in (frames, next_frames, events, actions))
    frames2[garbage] = torch.rand_like(frames2[garbage])
    next2[garbage] = torch.rand_like(next2[garbage])
    events2[garbage] = 7.0
    actions2[garbage] = (actions2[garbage] + 1) % 5
    loss2, metrics2 = model.loss(frames2, actions2, next2, events2, mask, rewards)
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-6) and metrics2 == pytest.approx(
        metrics, abs=1e-6
    )
    kept = model.loss(frames[mask], actions[mask], next_frames[mask], events[mask])[0]
    assert kept.item() == pytest.approx(loss.item(), abs=1e-6)
    # No transition kept: a zero loss that still backpropagates.
    empty, metrics = model.loss(frames, actions, next_frames, events, torch.zeros(6, dtype=bool))
    empty.backward()
    assert empty.item() == 0.0 and metrics == {}


def test_tap_sums_give_the_convolution_of_a_tiled_vector():
    torch.manual_seed(0)
    for size, padding in ((3, 1), (5, 2)):
        weight = torch.randn(4, 6, size, size)
        vector = torch.randn(2, 6)
        tiled = vector[:, :, None, None].expand(2, 6, 15, 19)
        convolved = torch.nn.functional.conv2d(tiled, weight, padding=padding)
        sums = tap_sums(weight, 15, 19, padding)  # [C, H, W, O]
        by_sums = torch.einsum("bc,cijo->boij", vector, sums)
        torch.testing.assert_close(by_sums, convolved, rtol=1e-5, atol=1e-5)


def test_fused_forward_is_the_layers_of_the_docstring(one_torch_thread):
    """``forward`` (channels-last, lookups for the one-hot planes, the pooled planes never
    built) computes what ``forward_unfused`` writes out layer by layer: the same logits, the
    same predictions on real frames, the same gradients."""
    torch.manual_seed(0)
    frames, actions, next_frames, events, _ = collect(num_envs=16, steps=6)
    model = EnvModel(5, channels=16, blocks=2, event_coef=1.0)
    fused, unfused = model(frames, actions), model.forward_unfused(frames, actions)
    for a, b in zip(fused, unfused, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert torch.equal(fused[0].argmax(1), unfused[0].argmax(1))
    assert torch.equal(fused[1].argmax(2), unfused[1].argmax(2))
    grads = []
    for forward in (model.forward, model.forward_unfused):
        model.zero_grad()
        pixel_logits, event_logits = forward(frames, actions)
        (pixel_logits.square().mean() + event_logits.square().mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    block = PoolAndInject(4)
    x = torch.randn(3, 4, 15, 19)
    torch.testing.assert_close(block(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2),
                               block.forward_unfused(x), rtol=1e-4, atol=1e-5)


def test_first_argmax_is_argmax_ties_included():
    torch.manual_seed(0)
    scores = torch.randn(7, 40, 15, 19).round(decimals=1)  # many ties
    scores[:, 0, 0, 0] = 0.5  # all equal: class 0
    assert torch.equal(first_argmax(scores), scores.argmax(0))
    assert first_argmax(scores)[0, 0, 0] == 0


def test_predictions_are_the_most_likely_classes_of_forward(one_torch_thread):
    torch.manual_seed(0)
    frames, actions, *_ = collect(num_envs=8, steps=3)
    model = EnvModel(5, channels=8, blocks=2, event_coef=1.0)
    pixel_logits, event_logits = model(frames, actions)
    predicted, counts = model.predict_each(frames, actions)
    assert torch.equal(predicted, class_frames(pixel_logits.argmax(1)))
    assert torch.equal(counts, event_logits.argmax(2).float())


def test_a_frozen_model_follows_changes_to_its_weights(one_torch_thread):
    """A frozen model keeps its pooled-plane tap sums between calls; an optimizer step or a
    ``load_state_dict`` still reaches the next prediction."""
    torch.manual_seed(0)
    frames, actions, *_ = collect(num_envs=8, steps=2)
    model = EnvModel(5, channels=8, blocks=2, event_coef=1.0).requires_grad_(False)
    other = EnvModel(5, channels=8, blocks=2, event_coef=1.0)

    def logits_match_layers() -> None:
        with torch.no_grad():
            fused, unfused = model(frames, actions), model.forward_unfused(frames, actions)
        for a, b in zip(fused, unfused, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    logits_match_layers()
    with torch.no_grad():
        for block in model.blocks:
            block.large.weight.mul_(-2.0)  # an in-place step, as an optimizer takes
    logits_match_layers()
    model.load_state_dict(other.state_dict())
    logits_match_layers()
    model.requires_grad_(True)  # fine-tuning: the sums carry gradients again
    model(frames, actions)[0].sum().backward()
    assert all(block.large.weight.grad.abs().sum() > 0 for block in model.blocks)


def test_equal_rows_are_predicted_once(one_torch_thread, monkeypatch):
    """``predict`` runs the model once per distinct (frame, action) pair and gives every row
    what ``predict_each`` gives it."""
    torch.manual_seed(0)
    frames, actions, *_ = collect(num_envs=3, steps=1)
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    frames, actions = frames[rows], actions[rows]
    actions[1] = (actions[0] + 1) % 5  # rows 0 and 1: same frame, another action
    model = EnvModel(5, channels=8, blocks=2, event_coef=1.0)
    expected = model.predict_each(frames, actions)
    batches = []
    each = model.predict_each
    monkeypatch.setattr(model, "predict_each", lambda f, a: batches.append(len(f)) or each(f, a))
    predicted = model.predict(frames, actions)
    for a, b in zip(predicted, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert batches == [4]  # (0, a), (0, a'), (1, .), (2, .)


def test_predictions_are_remembered_until_the_weights_change(one_torch_thread, monkeypatch):
    """A second ``predict`` of rows seen before computes only the new ones; after an
    in-place weight change or a ``load_state_dict`` every row is predicted afresh."""
    torch.manual_seed(0)
    frames, actions, *_ = collect(num_envs=4, steps=2)
    model = EnvModel(5, channels=8, blocks=2, event_coef=1.0).requires_grad_(False)
    batches = []
    each = model.predict_each
    monkeypatch.setattr(model, "predict_each", lambda f, a: batches.append(len(f)) or each(f, a))

    def predicts_as_each(rows: slice) -> None:
        predicted = model.predict(frames[rows], actions[rows])
        for a, b in zip(predicted, each(frames[rows], actions[rows]), strict=True):
            assert torch.equal(a, b)

    predicts_as_each(slice(0, 4))
    predicts_as_each(slice(2, 8))
    predicts_as_each(slice(0, 8))
    assert batches == [4, 4]
    with torch.no_grad():
        model.pixel_head.bias.add_(1.0)  # an in-place step, as an optimizer takes
    predicts_as_each(slice(0, 8))
    model.load_state_dict(EnvModel(5, channels=8, blocks=2, event_coef=1.0).state_dict())
    predicts_as_each(slice(0, 8))
    assert batches == [4, 4, 8, 8]


@pytest.mark.slow
def test_overfits_a_batch_of_real_transitions(one_torch_thread):
    torch.manual_seed(0)
    frames, actions, next_frames, events, rewards = collect(num_envs=8, steps=4)
    # The share of the commonest event pattern: what guessing it scores.
    _, counts = events.unique(dim=0, return_counts=True)
    baseline = counts.max().item() / len(events)
    model = EnvModel(5, channels=16, blocks=2, event_coef=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for _ in range(300):
        loss, metrics = model.loss(frames, actions, next_frames, events, reward_vector=rewards)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(metrics)
    first, last = history[0], model.loss(frames, actions, next_frames, events,
                                         reward_vector=rewards)[1]
    assert last["envmodel/loss"] < first["envmodel/loss"] / 10
    assert first["envmodel/pixel_accuracy"] < 0.5 < 0.99 < last["envmodel/pixel_accuracy"]
    assert last["envmodel/frame_accuracy"] > first["envmodel/frame_accuracy"]
    assert last["envmodel/event_accuracy"] > baseline + 0.1
    assert last["envmodel/reward_accuracy"] > baseline + 0.1


class CopyModel(EnvModel):
    """Predicts that nothing changes."""

    def __init__(self) -> None:
        super().__init__(5, channels=4, blocks=1, event_coef=1.0)

    def predict(self, frames, actions):
        return frames, torch.zeros(len(frames), len(EVENTS))


def test_rollout_accuracy(one_torch_thread):
    frames, actions, _, _, _ = collect(num_envs=3, steps=1)
    actions = actions.repeat(3, 1).T  # [B, T]
    still = frames[:, None].repeat(1, 3, 1, 1, 1)
    still[1, 1:] = 0.0  # row 1 empties after its first step (a reset frame has no empty cell)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[2, 1] = False  # row 2 crosses a boundary before its second step
    result = rollout_accuracy(CopyModel(), frames, actions, still, mask, steps=3)
    assert result["frame_accuracy"] == [1.0, 0.5, 0.5]
    assert result["pixel_accuracy"] == [1.0, 0.5, 0.5]
    mask[:, 0] = False
    result = rollout_accuracy(CopyModel(), frames, actions, still, mask, steps=2)
    assert all(math.isnan(x) for x in result["pixel_accuracy"])
    with pytest.raises(ValueError):
        rollout_accuracy(CopyModel(), frames, actions, still, mask, steps=4)
