"""``specfault oracle``: exit codes, output, bad input."""

from __future__ import annotations

import json
import os

from specfault.cli import main

CORPUS = os.path.join(os.path.dirname(__file__), "..", "oracle_corpus")


def test_bad_arguments_exit_2(capsys):
    assert main(["oracle", "--runs", "-1"]) == 2
    assert main(["oracle", "--runs", "many"]) == 2


def test_replay_of_a_missing_or_malformed_file_exits_2(tmp_path, capsys, model_ready):
    assert main(["oracle", "--replay", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "specfault-oracle/1", "steps": [{"op": "mmap"}]}')
    assert main(["oracle", "--replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "mmap needs" in err and len(err.strip().splitlines()) == 1


def test_replay_recorded_agreeing_entry_exits_0(capsys, model_ready):
    path = os.path.join(CORPUS, "agree-cow-fork-both-sides.json")
    assert main(["oracle", "--replay", path, "--recorded"]) == 0
    assert "agree" in capsys.readouterr().out


def test_replay_recorded_diverging_entry_exits_1_and_explains(tmp_path, capsys, model_ready):
    src = os.path.join(CORPUS, "agree-zero-page-then-write.json")
    entry = json.load(open(src))
    # a host record no model can match: the read returned 0x51s
    entry["host"]["steps"][1]["result"] = {"data": "51x8"}
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(entry))
    assert main(["oracle", "--replay", str(path), "--recorded"]) == 1
    out = capsys.readouterr().out
    assert "first divergence at step 1: result" in out and ">>  1" in out
    assert main(["oracle", "--replay", str(path), "--recorded", "--json"]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert obj["verdict"]["status"] == "diverge" and obj["verdict"]["divergence"]["step"] == 1


def test_small_campaign_json_counts_every_run(capsys, host_runner, model_ready, tmp_path):
    code = main(["oracle", "--runs", "6", "--seed", "11", "--max-steps", "8", "--json", "--show", "1",
                 "--out", str(tmp_path)])
    obj = json.loads(capsys.readouterr().out)
    c = obj["counts"]
    assert sum(c.values()) == 6
    assert code == (1 if c["diverge"] or c["host-error"] else 0)
    for d in obj["divergences"]:
        assert os.path.exists(d["saved"]) and len(d["program"]["steps"]) <= d["original_steps"]


def test_swap_mode_bad_combinations_exit_2_naming_the_argument(capsys, model_ready):
    assert main(["oracle", "--swap", "--jobs", "2"]) == 2
    assert "--jobs" in capsys.readouterr().err
    path = os.path.join(CORPUS, "agree-cow-fork-both-sides.json")
    assert main(["oracle", "--replay", path, "--recorded", "--swap"]) == 2
    assert "--swap" in capsys.readouterr().err


def test_a_swap_mode_counter_divergence_the_host_has_more_of_is_remeasured():
    from specfault.oracle.campaign import _disturbed
    from specfault.oracle.compare import Divergence, Verdict

    def v(host, model, what="counters"):
        return Verdict("diverge", Divergence(3, what, None, host, model))

    c = {"pswpin": 0, "pswpout": 2, "majflt": 0}
    assert _disturbed(v({**c, "pswpout": 6}, c))              # someone else swapped out too
    assert not _disturbed(v({**c, "pswpout": 1}, c))          # the model wrote more: a real one
    assert not _disturbed(v({**c, "majflt": 1}, c))           # majflt is the task's own
    assert not _disturbed(v(["x"], ["y"], what="pages"))
