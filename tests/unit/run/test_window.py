"""The timed window's rule (TrainSpec.window_done) and its progress text (bench.run.groups.step_text)."""

from bench.run.drivers.common import TrainSpec
from bench.run.groups import step_text


def spec(total_steps=3, warmup_steps=1, min_seconds=0.0, max_steps=None):
    return TrainSpec(device="cpu", dtype="float32", optimizer="adamw_torch", learning_rate=1e-4, seed=1,
                     batch_size=1, seq_len=8, grad_accum=1, total_steps=total_steps, vocab_size=32,
                     checkpointing="none", recipe="hf-kbit", warmup_steps=warmup_steps, min_seconds=min_seconds,
                     max_steps=max_steps)


def test_window_closes_when_both_minimums_are_met():
    s = spec(total_steps=3, warmup_steps=1, min_seconds=2.0, max_steps=10)
    assert not s.window_done([5.0, 1.0])  # the warm-up's 5 s do not count; 2 of 3 steps
    assert not s.window_done([5.0, 0.5, 0.5])  # 3 steps, but 1 s of timed steps
    assert s.window_done([5.0, 0.5, 0.5, 1.0])  # 3 steps and 2 s
    assert s.window_done([0.1] * 10)  # the upper bound, whatever the time


def test_window_without_seconds_is_the_step_count():
    s = spec(total_steps=3, min_seconds=0.0)
    assert [s.window_done([0.1] * n) for n in range(5)] == [False, False, False, True, True]
    assert spec(total_steps=3, max_steps=None).step_limit == 3 and spec(total_steps=3, max_steps=9).step_limit == 9


def test_step_text_shows_warm_up_then_the_window_against_its_minimums():
    ev = dict(step=0, of=None, min_of=12, max_of=502, warmup=2, timed_s=0.0, min_seconds=10.0, loss=2.5)
    assert step_text(ev) == "warm-up 1/2  loss 2.5000"
    assert step_text(dict(ev, step=6, timed_s=4.25)) == "step 5/10+ 4.2/10 s  loss 2.5000"
    assert step_text(dict(ev, step=5, of=12, min_seconds=0.0)) == "step 4/10  loss 2.5000"
    assert step_text({"step": 2, "of": 6, "loss": 1.0}) == "step 3/6  loss 1.0000"  # an older worker's event
