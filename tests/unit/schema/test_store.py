import json
from dataclasses import asdict

import pytest

from bench.schema.pairs import pair_records, parity_for
from bench.schema.record import SCHEMA_VERSION, ResultRecord, ResultsError
from bench.schema.store import append_record, finished_cell_ids, load, read_records


def test_committed_gpu_results_round_trip(gpu_results_files, tmp_path):
    assert gpu_results_files, "GPU results are committed under reports/results/"
    for path in gpu_results_files:
        records = read_records(path)
        assert records
        copy = tmp_path / path.name
        for r in records:
            append_record(copy, r)
        assert [asdict(r) for r in read_records(copy)] == [asdict(r) for r in records]
        for r in records:  # every record carries where it came from
            assert r.env["gpu_name"] and r.env["driver"] and r.env["git_commit"]
            assert r.env["packages"]["torch"] and r.env["packages"]["bitsandbytes"]


def test_cpu_run_records_round_trip(cpu_results, tmp_path):
    records = read_records(cpu_results)
    assert len(records) == 4 and all(r.status == "ok" for r in records)
    copy = tmp_path / "copy.jsonl"
    for r in records:
        append_record(copy, r)
    assert copy.read_text() == cpu_results.read_text()


def _record_lines(cpu_results):
    return cpu_results.read_text().splitlines()


def test_bad_json_names_file_and_line(cpu_results, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_record_lines(cpu_results)[0] + "\n{not json\n")
    with pytest.raises(ResultsError, match=r"bad.jsonl:2: not valid JSON"):
        read_records(bad)


def test_other_schema_version_is_refused(cpu_results, tmp_path):
    data = json.loads(_record_lines(cpu_results)[0])
    data["schema_version"] = SCHEMA_VERSION + 1
    bad = tmp_path / "v2.jsonl"
    bad.write_text(json.dumps(data) + "\n")
    with pytest.raises(ResultsError, match="schema_version"):
        read_records(bad)


def test_unknown_and_missing_fields_are_refused(cpu_results, tmp_path):
    data = json.loads(_record_lines(cpu_results)[0])
    extra = dict(data, surprise=1)
    (tmp_path / "extra.jsonl").write_text(json.dumps(extra) + "\n")
    with pytest.raises(ResultsError, match="unknown fields"):
        read_records(tmp_path / "extra.jsonl")
    del data["backend"]
    (tmp_path / "missing.jsonl").write_text(json.dumps(data) + "\n")
    with pytest.raises(ResultsError, match="missing fields"):
        read_records(tmp_path / "missing.jsonl")


def test_empty_and_unreadable_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ResultsError, match="holds no records"):
        load([tmp_path / "empty.jsonl"])
    with pytest.raises(ResultsError, match="cannot read"):
        read_records(tmp_path / "absent.jsonl")


def test_latest_record_per_cell_wins_and_resume_set(cpu_results, tmp_path):
    lines = _record_lines(cpu_results)
    retried = json.loads(lines[0])
    retried["status"], retried["error"] = "timeout", "cell took over 1 s"
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(retried)] + lines[1:]) + "\n")
    recs = load([path])
    assert len(recs) == 4
    assert next(r for r in recs if r.cell_id == retried["cell_id"]).status == "timeout"
    assert retried["cell_id"] not in finished_cell_ids(path)
    assert len(finished_cell_ids(path)) == 3


def test_parity_verdict_propagates_to_both_sides(gpu_results_files):
    records = load([p for p in gpu_results_files if "h100-native" in p.name])
    pairs = [p for p in pair_records(records) if p.both_ok]
    assert pairs
    for p in pairs:
        assert p.hf.matched is True and p.unsloth.matched is True
        assert p.hf.trainable_params == p.unsloth.trainable_params
        assert parity_for(p.hf, p.unsloth)["matched"]


def test_parity_for_flags_a_loss_mismatch(gpu_results_files):
    records = load([p for p in gpu_results_files if "h100-native" in p.name])
    pair = next(p for p in pair_records(records) if p.both_ok)
    tampered = ResultRecord.from_dict(dict(asdict(pair.unsloth), loss_first=pair.hf.loss_first * 1.01))
    verdict = parity_for(pair.hf, tampered)
    assert not verdict["matched"] and "first-step losses differ" in verdict["reasons"][0]


def test_older_records_read_as_one_repeat_with_no_mfu(gpu_results_files):
    """Frozen records of versions before 3: repeat 0 of 1; their mfu (recompute and non-causal attention counted) is
    no longer today's mfu or hfu, so it reads as unknown."""
    raw = [json.loads(line) for path in gpu_results_files for line in path.read_text().splitlines() if line.strip()]
    v2 = [d for d in raw if d["schema_version"] < 3 and d.get("mfu") is not None]
    assert v2, "frozen records of an older version with an mfu"
    from bench.schema.record import upgrade
    for d in v2[:20]:
        up = ResultRecord.from_dict(upgrade(d))
        assert up.schema_version == SCHEMA_VERSION == 3
        assert (up.repeat, up.repeats, up.mfu, up.hfu, up.flops_per_token) == (0, 1, None, None, None)
        assert (up.tokens_per_s, up.step_s) == (d["tokens_per_s"], d["step_s"])


def _repeats_of(base: ResultRecord, n: int, run_id: str, **changes) -> list[ResultRecord]:
    from dataclasses import replace

    return [replace(base, repeat=k, repeats=n, run_id=run_id, **changes) for k in range(n)]


def test_latest_repeats_keeps_every_repeat_of_the_latest_measurement(gpu_results_files):
    """With --repeats a measurement is one record per repeat: the latest keeps them all (a later measurement of
    another repeat count replaces an earlier one as a whole; a resumed repeat replaces only itself), and one
    record stands for the cell: the first repeat that did not run ok, else repeat 0."""
    from dataclasses import replace

    from bench.schema.store import cell_finished, latest_per_cell, latest_repeat_indexes, latest_repeats

    a, b = [r for r in read_records(gpu_results_files[0]) if r.ok][:2]
    old = _repeats_of(a, 3, "run-1")  # an earlier measurement with --repeats 3
    first = _repeats_of(a, 2, "run-2")
    retried = replace(first[1], run_id="run-3")  # repeat 1 measured again by a resumed run
    other = _repeats_of(b, 2, "run-2")
    records = old + [first[0], replace(first[1], status="timeout", error="cell took over 1 s"), *other, retried]
    latest = latest_repeats(records)
    assert set(latest) == {a.cell_id, b.cell_id}
    assert [(r.repeat, r.run_id) for r in latest[a.cell_id]] == [(0, "run-2"), (1, "run-3")]
    assert [r.repeat for r in latest[b.cell_id]] == [0, 1]
    assert sum(len(s) for s in latest_repeat_indexes(records)) == 4
    one = {r.cell_id: r for r in latest_per_cell(records)}
    assert len(latest_per_cell(records)) == 2 and one[a.cell_id] is first[0]  # repeat 0 stands for it
    failing = records[:-1]  # without the retry, the timed-out repeat 1 stands for the cell
    assert {r.cell_id: r for r in latest_per_cell(failing)}[a.cell_id].status == "timeout"
    assert cell_finished(latest[a.cell_id], 2) and not cell_finished(latest_repeats(failing)[a.cell_id], 2)
    assert not cell_finished(latest[a.cell_id][:1], 2)  # a repeat still to run
    assert cell_finished([replace(a, repeats=2, status="oom")], 2)  # out of memory ends the cell: no more repeats


def test_latest_repeats_of_one_repeat_is_the_latest_record(gpu_results_files):
    from bench.schema.store import latest_per_cell, latest_repeats

    records = read_records(gpu_results_files[0])
    latest = latest_repeats(records)
    assert [r for reps in latest.values() for r in reps] == latest_per_cell(records)
    assert all(len(reps) == 1 for reps in latest.values())


def test_latest_repeats_refuses_a_cell_of_two_hosts(gpu_results_files):
    from dataclasses import replace

    from bench.schema.store import latest_repeat_indexes, latest_repeats

    r = next(r for r in read_records(gpu_results_files[0]) if r.env.get("gpu_name"))
    elsewhere = replace(r, env=dict(r.env, gpu_name="another GPU"))
    assert len(latest_repeat_indexes([r, elsewhere])) == 2  # two results, one per host
    with pytest.raises(ValueError, match="more than one host"):
        latest_repeats([r, elsewhere])
