"""Expressions: random problems whose tool program depends on the context."""

import itertools
from functools import partial

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from procmem.algorithms.a2c import A2C
from procmem.app import compose_config
from procmem.envs.expressions import ExpressionEnv, infix, reference_program
from procmem.envs.toolenv_machine import (
    ADD,
    ANS,
    CTX,
    EOS,
    MUL,
    RCL,
    STO,
    SUB,
    TOOL_TOKENS,
    VOCAB,
    apply_tools,
    binary_op,
)
from procmem.models.networks import ToolAttentionPolicy, ToolGRUPolicy
from procmem.models.observations import as_tensors
from procmem.models.tool_pointer import ToolPointerPolicy
from procmem.settings import SettingError

from helpers import run_cli, run_program

CPU = torch.device("cpu")
ACTION = {token: TOOL_TOKENS.index(token) for token in TOOL_TOKENS}


def drawn(num_envs: int = 256, seed: int = 0, **kwargs) -> tuple[ExpressionEnv, dict]:
    env = ExpressionEnv(num_envs=num_envs, **kwargs)
    obs, _ = env.reset(seed=seed)
    return env, obs


def postfix_value(context: np.ndarray, width: int) -> int:
    """Evaluate a context's postfix tokens with a stack, independently of the env."""
    stack, digits = [], []
    for token in context[1:]:
        if token < 10:
            digits.append(int(token))
            if len(digits) == width:
                stack.append(int("".join(map(str, digits))))
                digits = []
        elif token in (MUL, ADD, SUB):
            right, left = stack.pop(), stack.pop()
            stack.append(int(binary_op(np.array(token), np.array(left), np.array(right))))
        else:
            assert token == EOS
    assert len(stack) == 1
    return stack[0]


# --- problems -------------------------------------------------------------------------------


@pytest.mark.parametrize("operand_high", [9, 99])
def test_context_is_the_postfix_of_the_target(operand_high):
    env, obs = drawn(stages=(0, 1, 2, 3), operand_high=operand_high)
    assert (obs["context"][:, 0] == CTX).all()
    for i, context in enumerate(obs["context"]):
        assert postfix_value(context, env.digits) == env.target[i]


def test_infix_text_evaluates_to_the_target():
    env, _ = drawn(stages=(0, 1, 2, 3))
    for problem in env.describe():
        assert eval(problem["expression"]) == problem["target"]  # noqa: S307 (digits, + - * ( ))
        assert problem["depth"] == problem["stage"] + 1


def test_depth_and_every_shape_of_a_depth_are_drawn():
    for stage in range(4):
        env, _ = drawn(num_envs=512, stages=(stage,), max_depth=4)
        depth = stage + 1
        shapes = set(zip(env.left.tolist(), env.right.tolist(), strict=True))
        expected = {(depth, 0)} | {(depth - 1, m) for m in range(1, depth)} | {
            (k, depth - 1) for k in range(depth - 1)}
        assert shapes == expected
        joined = env.right > 0
        assert (np.maximum(env.left, env.right)[joined] + 1 == depth).all()
        assert (env.num_operands == env.left + 1 + np.where(joined, env.right + 1, 0)).all()


def test_seeding_is_deterministic():
    (a, obs_a), (b, obs_b) = drawn(seed=5), drawn(seed=5)
    assert (obs_a["context"] == obs_b["context"]).all() and (a.target == b.target).all()
    _, obs_c = drawn(seed=6)
    assert (obs_a["context"] != obs_c["context"]).any()


# --- programs -------------------------------------------------------------------------------


@pytest.mark.parametrize("max_depth", [1, 4, 6])
def test_reference_programs_solve_every_problem_within_the_step_limit(max_depth):
    env, _ = drawn(max_depth=max_depth, stages=tuple(range(max_depth)),
                   max_steps=2 * max_depth + 2, operand_high=20)
    programs = [reference_program(env.left[i], env.right[i], env.operators[i])
                for i in range(env.num_envs)]
    for i, program in enumerate(programs):
        operands = env.operands[i, : env.num_operands[i]].tolist()
        assert run_program(program, operands)[0] == env.target[i]
        assert len(program) <= 2 * (env.stage[i] + 1) + 2
    # The env itself, stepping every program at once, answers correctly everywhere.
    correct = np.zeros(env.num_envs, dtype=bool)
    for t in range(max(map(len, programs))):
        actions = [ACTION[p[t]] if t < len(p) else ACTION[ANS] for p in programs]
        _, reward, terminated, _, info = env.step(np.array(actions))
        ends_now = np.array([len(p) == t + 1 for p in programs])
        correct |= ends_now & info["success"]
        assert (reward[ends_now] >= 1.0).all()
    assert correct.all()


def _best_memory_free_accuracy(operands: np.ndarray, targets: np.ndarray, max_len: int) -> float:
    """Exhaustive search: the best share of problems any program of MUL/ADD/SUB tokens then
    ANS (no STO, RCL) answers right, up to ``max_len`` tokens."""
    best = 0.0
    num_operands = operands.shape[1]
    for length in range(max_len):
        for program in itertools.product((MUL, ADD, SUB), repeat=length):
            acc, mem = operands[:, 0].copy(), np.zeros(len(operands), dtype=np.int64)
            pointer = np.ones(len(operands), dtype=np.int64)
            for token in program:
                acc, mem, pointer, _ = apply_tools(np.array(token), acc, mem, pointer, operands,
                                                   num_operands)
            best = max(best, float(np.mean(acc == targets)))
    return best


@pytest.mark.parametrize(("join", "inner"), [(MUL, ADD), (SUB, MUL)])
def test_joined_chains_need_the_memory_tools(join, inner):
    """a*(b+c) and a-(b*c): no program without STO/RCL solves them all (past 2 operators
    the register, 0, is the right operand, so 6 tokens cover every memory-free program);
    the reference program (with STO, and RCL for SUB) does."""
    rng = np.random.default_rng(0)
    operands = rng.integers(0, 10, size=(200, 3))
    a, b, c = operands.T
    targets = binary_op(np.array(join), a, binary_op(np.array(inner), b, c))
    assert _best_memory_free_accuracy(operands, targets, max_len=6) < 0.5
    program = reference_program(0, 1, [inner, join])
    assert STO in program and (RCL in program) == (join == SUB)
    assert all(run_program(program, row.tolist())[0] == t
               for row, t in zip(operands, targets, strict=True))


def test_infix_and_program_of_known_shapes():
    # (3*4+2)-(5*6): left chain MUL ADD, right chain MUL, join SUB.
    assert infix(2, 1, [MUL, ADD, MUL, SUB], [3, 4, 2, 5, 6]) == "((3*4)+2)-(5*6)"
    assert [VOCAB[t] for t in reference_program(2, 1, [MUL, ADD, MUL, SUB])] == [
        "MUL", "ADD", "STO", "MUL", "RCL", "SUB", "ANS"]
    assert infix(0, 1, [ADD, MUL], [7, 1, 2]) == "7*(1+2)"
    assert [VOCAB[t] for t in reference_program(0, 1, [ADD, MUL])] == ["STO", "ADD", "MUL", "ANS"]
    assert infix(1, 0, [SUB], [4, 9]) == "4-9"


def test_shaping_counts_the_partial_results_reached():
    env = ExpressionEnv(num_envs=64, shaping=0.5, stages=(2,))
    env.reset(seed=3)
    programs = [reference_program(env.left[i], env.right[i], env.operators[i])
                for i in range(env.num_envs)]
    expected = env.partial_mask.sum(axis=1)  # the reference program passes every partial
    for t in range(max(map(len, programs))):
        actions = [ACTION[p[t]] if t < len(p) else ACTION[ANS] for p in programs]
        _, reward, *_ = env.step(np.array(actions))
        ends_now = np.array([len(p) == t + 1 for p in programs])
        assert reward[ends_now] == pytest.approx(1.0 + 0.5 * expected[ends_now])


def test_state_dict_round_trip_keeps_the_expressions():
    env, _ = drawn(num_envs=8)
    twin = ExpressionEnv(num_envs=8)
    twin.load_state_dict(env.state_dict())
    assert twin.describe() == env.describe()
    actions = np.full(8, ACTION[MUL])
    first, second = env.step(actions), twin.step(actions)
    assert (first[0]["context"] == second[0]["context"]).all()


# --- validation and config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"max_depth": 0}, "max_depth"), ({"stages": (0, 4)}, "stages"),
     ({"max_depth": 2, "stages": (0,), "eval_stages": (0, 1, 2)}, "eval_stages")],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(SettingError) as error:
        ExpressionEnv(**kwargs)
    assert error.value.key == name


def test_the_config_preset_evaluates_depths_it_never_trains_and_can_reach_them():
    env = instantiate(compose_config(["experiment=model_native_expressions"]).env)
    assert (env.stages, env.eval_stages) == ((0, 1, 2), (0, 1, 2, 3, 4, 5))
    assert env.max_steps >= 2 * env.max_depth + 2  # every eval depth reachable


def test_training_never_draws_a_depth_that_only_evaluation_reads():
    """So every problem of an untrained depth an evaluation scores is one training never
    saw: the depths themselves never come up."""
    env = instantiate(compose_config(["experiment=model_native_expressions",
                                      "env.num_envs=64"]).env)
    env.reset(seed=0)
    rng, seen = np.random.default_rng(0), set()
    for _ in range(200):  # random programs: episodes end and new problems are drawn
        env.step(rng.integers(0, env.num_actions, size=env.num_envs))
        seen |= {problem["depth"] for problem in env.describe()}
    assert seen == {1, 2, 3}


# --- the attention network ------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_attention_network_reads_order_that_mean_pooling_cannot():
    """Two contexts with the same tokens in another order: the mean-pooling GRU cannot
    tell them apart at the first step, the attention network can."""
    env, obs = drawn(num_envs=2, stages=(1,))
    context = np.array([[CTX, 3, 4, MUL, 5, ADD], [CTX, 3, 4, ADD, 5, MUL]])
    obs = {**obs, "context": np.pad(context, ((0, 0), (0, env.context_length - 6)),
                                    constant_values=EOS)}
    torch.manual_seed(0)
    for network, differs in [(ToolGRUPolicy(env), False), (ToolAttentionPolicy(env), True)]:
        logits, values, state = network(as_tensors(obs, CPU), network.initial_state(2))
        assert logits.shape == (2, env.num_actions) and values.shape == (2,)
        assert state.shape == network.initial_state(2).shape
        assert (not torch.allclose(logits[0], logits[1])) == differs


@pytest.mark.usefixtures("one_torch_thread")
def test_attention_network_encodes_a_context_once_per_episode():
    """Later steps reuse the encoding kept in the state: changing the observed operands
    mid-episode changes nothing, a new episode (step 0) re-encodes."""
    env, obs = drawn(num_envs=4, stages=(2,))
    torch.manual_seed(0)
    network = ToolAttentionPolicy(env, hidden=32)
    _, _, state = network(as_tensors(obs, CPU), network.initial_state(4))
    later = {**obs, "step": np.ones(4, dtype=np.int64), "prev_token": np.full(4, MUL)}
    context = obs["context"].copy()
    digits = context < 10
    context[digits] = (context[digits] + 1) % 10
    changed = {**later, "context": context}
    same = network(as_tensors(later, CPU), state)[0]
    assert torch.allclose(same, network(as_tensors(changed, CPU), state)[0])
    restarted = {**changed, "step": np.zeros(4, dtype=np.int64)}
    assert not torch.allclose(same, network(as_tensors(restarted, CPU), state)[0])


def pointer_steps(network: ToolPointerPolicy, obs: dict, tokens: list[int]) -> torch.Tensor:
    """The logits of ``network`` at every step of emitting ``tokens`` on ``obs``: [T, B, A]."""
    batch = len(obs["context"])
    state, logits = network.initial_state(batch), []
    for step, previous in enumerate([CTX, *tokens]):
        obs = {**obs, "step": np.full(batch, step), "prev_token": np.full(batch, previous)}
        out, _, state = network(as_tensors(obs, CPU), state)
        logits.append(out)
    return torch.stack(logits)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("relative, forward, decoder", [
    (True, False, "gru"), (False, False, "gru"), (True, True, "gru"), (True, False, "feedforward")])
def test_the_pointer_network_does_the_same_on_a_shifted_or_padded_context(relative, forward,
                                                                           decoder):
    """Trained weights on a deeper env's longer context, or on the context shifted right
    behind EOS padding: the same logits at every step (content and offsets only)."""
    env, obs = drawn(num_envs=8, stages=(2,), max_depth=3)
    longer = ExpressionEnv(num_envs=8, max_depth=6, max_steps=14, stages=(2,))
    torch.manual_seed(0)
    settings = {"hidden": 32, "relative": relative, "forward": forward, "decoder": decoder}
    network = ToolPointerPolicy(env, **settings)
    on_longer = ToolPointerPolicy(longer, **settings)
    on_longer.load_state_dict(network.state_dict())
    tokens = [MUL, STO, ADD, SUB]
    extra = longer.context_length - env.context_length
    padded = np.pad(obs["context"], ((0, 0), (0, extra)), constant_values=EOS)
    shifted = np.pad(obs["context"], ((0, 0), (extra, 0)), constant_values=EOS)
    expected = pointer_steps(network, obs, tokens)
    for context in (padded, shifted):
        torch.testing.assert_close(pointer_steps(on_longer, {**obs, "context": context}, tokens),
                                   expected, atol=1e-5, rtol=1e-5)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("forward", [True, False])
def test_the_forward_pointer_reads_nothing_before_its_last_read(forward):
    """With ``forward=true`` the codes of the tokens before the previous read's centre do not
    reach the next step's logits; without it they do."""
    env, obs = drawn(num_envs=8, stages=(2,), max_depth=3)
    torch.manual_seed(0)
    network = ToolPointerPolicy(env, hidden=32, forward=forward)
    state = network(as_tensors({**obs, "step": np.zeros(8, dtype=np.int64),
                                "prev_token": np.full(8, CTX)}, CPU), network.initial_state(8))[2]
    h, centre = network.hidden, 4
    state[:, 2 * h] = centre  # as if the last read was the fifth token
    earlier = state.clone()
    codes = earlier[:, 2 * h + 1:].view(8, env.context_length, h)
    codes[:, :centre] = torch.randn(8, centre, h)
    step = {**obs, "step": np.ones(8, dtype=np.int64), "prev_token": np.full(8, MUL)}
    logits = network(as_tensors(step, CPU), state)[0]
    changed = network(as_tensors(step, CPU), earlier)[0]
    assert torch.allclose(logits, changed) == forward


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("decoder", ["gru", "feedforward"])
def test_the_feedforward_decoder_carries_nothing_but_the_read_from_step_to_step(decoder):
    """With ``decoder=feedforward`` a step's logits depend on the previous token, the read
    and its centre, not on the decoder state the step before left; with the GRU they do."""
    env, obs = drawn(num_envs=8, stages=(2,), max_depth=3)
    torch.manual_seed(0)
    network = ToolPointerPolicy(env, hidden=32, decoder=decoder)
    state = network(as_tensors({**obs, "step": np.zeros(8, dtype=np.int64),
                                "prev_token": np.full(8, CTX)}, CPU), network.initial_state(8))[2]
    other = state.clone()
    other[:, :network.hidden] = torch.randn(8, network.hidden)
    step = {**obs, "step": np.ones(8, dtype=np.int64), "prev_token": np.full(8, MUL)}
    same = torch.allclose(network(as_tensors(step, CPU), state)[0],
                          network(as_tensors(step, CPU), other)[0])
    assert same == (decoder == "feedforward")


@pytest.mark.usefixtures("one_torch_thread")
def test_the_pointer_network_with_the_whole_context_encoder_tells_a_shift():
    """The ablation that codes every token from the whole context (a bidirectional GRU) sees
    where the problem sits: its logits change with the shift."""
    env, obs = drawn(num_envs=8, stages=(2,), max_depth=3)
    longer = ExpressionEnv(num_envs=8, max_depth=6, max_steps=14, stages=(2,))
    torch.manual_seed(0)
    network = ToolPointerPolicy(longer, hidden=32, encoder="gru")
    extra = longer.context_length - env.context_length
    padded = np.pad(obs["context"], ((0, 0), (0, extra)), constant_values=EOS)
    shifted = np.pad(obs["context"], ((0, 0), (extra, 0)), constant_values=EOS)
    assert not torch.allclose(pointer_steps(network, {**obs, "context": padded}, [MUL]),
                              pointer_steps(network, {**obs, "context": shifted}, [MUL]))


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("network", [ToolAttentionPolicy, ToolPointerPolicy])
def test_a_short_run_learns_to_read_depth_one_operators(network):
    """Depth 1 (``a o b``) needs the operator read from the context: chance is 1/3."""
    env_kwargs = {"num_envs": 64, "stages": (0,), "eval_stages": (0,)}
    agent = A2C(ExpressionEnv(**env_kwargs), ExpressionEnv(**env_kwargs), CPU, 0,
                partial(network, hidden=32), n_steps=4, lr=3e-3, gamma=1.0,
                optimizer="adam", max_grad_norm=1.0, bootstrap_truncated=False)
    before = agent.evaluate(128)["eval/success_rate_stage0"]
    for _ in range(80):
        agent.train_iteration()
    after = agent.evaluate(128)["eval/success_rate_stage0"]
    assert before < 0.5
    assert after > 0.9, after


def test_the_depth_benchmark_prints_every_depth_and_keeps_its_runs_when_asked(tmp_path):
    tiny = ["--seeds", "1", "--episodes", "4", "--workers", "1", "--keep", str(tmp_path),
            "trainer.iterations=2", "trainer.eval_every=2", "env.num_envs=4"]
    out = run_cli("benchmarks/expressions_depth.py", *tiny).stdout
    rows = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    assert [(row[0], row[1]) for row in rows] == [
        ("1", "yes"), ("2", "yes"), ("3", "yes"), ("4", "no"), ("5", "no"), ("6", "no")]
    assert all(0.0 <= float(value) <= 1.0 for row in rows for value in row[2:])
    spelled = run_cli("evaluate.py", f"run={tmp_path / 'seed0'}", "episodes=2").stdout
    assert "reference=" in spelled and "program=" in spelled  # the documented next step
    again = run_cli("benchmarks/expressions_depth.py", *tiny, check=False)
    assert again.returncode == 2 and "already holds a seed<n> run dir" in again.stderr
    zero = run_cli("benchmarks/expressions_depth.py", "--seeds", "0", check=False)
    assert zero.returncode == 2 and "--seeds and --episodes must be >= 1" in zero.stderr

