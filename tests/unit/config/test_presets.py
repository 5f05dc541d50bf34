"""`bench run --preset`: every part is a valid run that the claims it names can read."""

import json

import pytest

from bench.cli.run import combined_exit_code, preset_request
from bench.config.presets import PRESETS, preset_parts
from bench.config.request import RunRequest, to_config
from bench.config.settings import ConfigError
from tests.helpers import REPO

CLAIMS = {c["id"]: c for c in json.loads((REPO / "bench" / "data" / "claims.json").read_text())["claims"]}


@pytest.mark.parametrize("part", PRESETS["articles"], ids=lambda p: p.name)
def test_each_article_part_is_a_valid_run_its_claims_can_read(part):
    config = to_config(preset_request(part, RunRequest(tier="t4")))
    assert config.reference == part.reference and config.recipes == part.recipes.split(",")
    for claim_id in part.claims:
        rule = CLAIMS[claim_id]["rule"]
        needed = [rule["recipe"]] if "recipe" in rule else [rule["baseline"], rule["candidate"]]
        assert set(needed) <= set(config.recipes), claim_id
        where = rule.get("where", {})
        if where.get("modes") == ["native"]:
            # native runs only: on the run's own tier, or on the card the claim names (native where it is present)
            assert part.tier is None or part.tier in where.get("tiers", []), claim_id
        for field, value in (("seq_len", config.seq_lens), ("batch_size", config.batch_sizes)):
            if field in where:
                assert where[field] in value, (claim_id, field)
        if "tiers" in where:
            assert config.tier in where["tiers"], claim_id
        if "models" in where:
            assert set(where["models"]) <= set(config.models), claim_id
        if "grad_accum" in where:
            assert config.train.grad_accum == where["grad_accum"], claim_id


def test_the_run_s_own_options_survive_and_the_tier_follows_the_part():
    base = RunRequest(tier="h100", train={"lora_r": 32, "steps": 7})
    by_name = {p.name: p for p in PRESETS["articles"]}
    s4 = to_config(preset_request(by_name["s4-l4-mistral"], base))
    assert s4.tier == "l4" and s4.train.lora_r == 32 and s4.train.steps == 7 and s4.train.grad_accum == 4
    assert to_config(preset_request(by_name["s3-peft"], base)).tier == "h100"  # no GPU stated: the run's


def test_a_part_resting_on_one_cell_measures_it_enough_times_for_a_verdict():
    by_name = {p.name: p for p in PRESETS["articles"]}
    for name in ("s2-7b-lora16", "s4-l4-mistral"):  # one size each: a claim needs two measurements at least
        part = by_name[name]
        assert len(part.seq_lens.split(",")) == len(part.batch_sizes.split(",")) == 1
        assert to_config(preset_request(part, RunRequest(tier="h100"))).repeats == 3
        # the user's --repeats, when larger, wins
        assert to_config(preset_request(part, RunRequest(tier="h100", run={"repeats": 5}))).repeats == 5
    assert to_config(preset_request(by_name["s7-unsloth-vram"], RunRequest(tier="h100", run={"repeats": 2}))).repeats == 2
    assert to_config(preset_request(by_name["s3-peft"], RunRequest(tier="h100"))).repeats == 1


def test_part_selection():
    assert [p.name for p in preset_parts("articles/s7-unsloth-vram,s2-7b-lora16")[1]] == ["s7-unsloth-vram",
                                                                                          "s2-7b-lora16"]
    for bad in ("nope", "articles/nope", "articles/"):
        if bad == "articles/":
            assert len(preset_parts(bad)[1]) == len(PRESETS["articles"])
            continue
        with pytest.raises(ConfigError):
            preset_parts(bad)


def test_combined_exit_code():
    assert combined_exit_code([0, 0]) == 0 and combined_exit_code([3, 3]) == 3
    assert combined_exit_code([0, 3]) == 1 and combined_exit_code([0, 1]) == 1 and combined_exit_code([2]) == 2
