"""The training-fingerprint part of the parity check (bench.schema.pairs.fingerprint_differences)."""

from bench.schema.pairs import fingerprint_differences

BASE = {"lora_scaling": 1.0, "lora_dropout": 0.0, "optimizer": {"kind": "adamw", "bits": 8},
        "first_update_rms": 1.4e-4}


def fp(**over):
    return {**BASE, **over}


def test_schedules_of_different_lengths_match_over_the_steps_both_ran():
    # The timed window runs until its minimum time: one recipe runs 25 steps, another 24.
    assert fingerprint_differences(fp(lr_per_step=[2e-4] * 25), fp(lr_per_step=[2e-4] * 24)) == []


def test_a_schedule_that_departs_is_named_at_its_first_differing_step():
    decaying = [2e-4, 2e-4, 1e-4, 5e-5]
    reasons = fingerprint_differences(fp(lr_per_step=[2e-4] * 10), fp(lr_per_step=decaying))
    assert reasons == ["learning rate differs from step 3: 0.0002 vs 0.0001"]


def test_float_noise_in_the_rate_is_not_a_difference():
    assert fingerprint_differences(fp(lr_per_step=[2e-4]), fp(lr_per_step=[2e-4 * (1 + 1e-9)])) == []


def test_other_fields_still_differ():
    reasons = fingerprint_differences(fp(lora_scaling=1.0), fp(lora_scaling=2.0))
    assert reasons == ["lora scaling differs: 1.0 vs 2.0"]
