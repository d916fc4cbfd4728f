"""The knob registry (config.KNOBS) is the one source of truth: every knob
the model reads is registered, every registered knob is read, unknown names
are refused everywhere with the closest valid spelling, and a protocol's
preset follows the protocol."""

from __future__ import annotations

import pathlib
import re

import pytest

import specfault as sf
from specfault.check.mutants import MUTANTS
from specfault.cli import main
from specfault.config import (
    KNOBS,
    PROTOCOL_PRESETS,
    Config,
    UnknownKnob,
    knob_info,
    parse_knobs,
)

SRC = pathlib.Path(sf.__file__).parent


def _read_sites() -> set[str]:
    names: set[str] = set()
    for f in SRC.rglob("*.py"):
        if f.name == "config.py":
            continue
        names |= set(re.findall(r'\.knob\("([a-z_0-9]+)"\)', f.read_text()))
    return names


def test_every_knob_read_is_registered_and_every_registered_knob_is_read() -> None:
    read = _read_sites()
    assert read, "no knob read sites found: the pattern is stale"
    assert read <= set(KNOBS), read - set(KNOBS)
    fields_read_directly = {k for k, v in KNOBS.items() if v.is_field}
    unread = set(KNOBS) - read - fields_read_directly
    assert not unread, f"registered but never read: {sorted(unread)}"


def test_read_sites_pass_no_default() -> None:
    # the registry holds the only default: knob("x", default) is gone
    for f in SRC.rglob("*.py"):
        assert not re.search(r'\.knob\("[a-z_0-9]+",', f.read_text()), f


def test_defaults_come_from_the_registry() -> None:
    cfg = Config()
    for name, k in KNOBS.items():
        assert cfg.knob(name) == k.default, name


@pytest.mark.parametrize("build", [
    lambda: sf.Machine(fault_protcol="pervma"),
    lambda: Config(fault_protcol="pervma"),
    lambda: Config().with_(fault_protcol="pervma"),
])
def test_a_typo_in_a_field_name_is_refused_with_the_closest_name(build) -> None:
    with pytest.raises(TypeError, match=r"unknown knob 'fault_protcol' \(did you mean 'fault_protocol'\?\)"):
        build()


@pytest.mark.parametrize("build", [
    lambda: Config(knobs={"spf_vma_refcont": True}),
    lambda: Config().with_(spf_vma_refcont=True),
    lambda: sf.Machine(spf_vma_refcont=True),
    lambda: parse_knobs({"spf_vma_refcont": "true"}),
    lambda: Config().knob("spf_vma_refcont"),
])
def test_a_typo_in_a_knob_name_is_refused_everywhere(build) -> None:
    with pytest.raises(UnknownKnob, match="did you mean 'spf_vma_refcount'"):
        build()
    assert issubclass(UnknownKnob, TypeError) and issubclass(UnknownKnob, ValueError)


@pytest.mark.parametrize("name,value", [
    ("fault_protocol", "lespinasse"), ("spf_seq", "thread"), ("spf_walk", "none"),
    ("no_seq2_check", 1), ("no_seq2_check", "yes"), ("nr_frames", 0), ("nr_frames", 1.5),
    ("nr_cpus", True), ("fault_around_bytes", 5000), ("mm_lock_seq_bits", 65),
    ("page_table_free", "later"),
])
def test_a_bad_value_is_refused(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        Config().with_(**{name: value})


def test_a_field_is_not_a_knobs_entry() -> None:
    with pytest.raises(ValueError, match="Config field"):
        Config(knobs={"fault_protocol": "pervma"})


def test_cli_strings_parse_by_the_knobs_type() -> None:
    assert parse_knobs({"spf_vma_refcount": "true", "mm_lock_seq_bits": "2",
                        "spf_seq": "vma"}) == {"spf_vma_refcount": True, "mm_lock_seq_bits": 2,
                                               "spf_seq": "vma"}
    with pytest.raises(ValueError, match="true or false"):
        knob_info("no_seq2_check").parse("maybe")


def test_every_mutant_names_registered_knobs_of_kind_mutant_or_protocol() -> None:
    for m in MUTANTS.values():
        cfg = Config(fault_protocol=m.protocol).with_(**m.knobs)
        for name, value in m.knobs.items():
            assert cfg.knob(name) == value
            assert KNOBS[name].kind in ("mutant", "protocol", "model"), (m.name, name)


def test_protocol_preset_is_a_function_of_the_protocol() -> None:
    duf = Config(fault_protocol="dufour")
    for name, value in PROTOCOL_PRESETS["dufour"].items():
        assert duf.knob(name) == value
    spec = duf.with_(fault_protocol="speculative")
    for name in PROTOCOL_PRESETS["dufour"]:
        assert spec.knob(name) == KNOBS[name].default, name
    assert spec == Config(fault_protocol="speculative")
    # a knob set explicitly (a mutant of the protocol) survives the switch
    mut = duf.with_(spf_vma_pin=False).with_(fault_protocol="speculative")
    assert mut.knob("spf_vma_pin") is False and mut.knob("spf_seq") == "mm"
    # and back: the preset returns with the protocol, the explicit knob wins
    back = mut.with_(fault_protocol="dufour")
    assert back.knob("spf_seq") == "vma" and back.knob("spf_vma_pin") is False


def test_machine_runs_the_protocol_it_was_given() -> None:
    m = sf.Machine(nr_frames=256, fault_protocol="pervma")
    assert m.config.fault_protocol == "pervma"
    p = m.spawn()
    a = p.mmap(0, 4096, sf.PROT_READ | sf.PROT_WRITE, sf.MAP_PRIVATE | sf.MAP_ANONYMOUS)
    p.write(a, b"x")
    p.write(a + 1, b"y")            # the VMA has its anon_vma now: a per-VMA fault
    assert m.vmstat()["vma_lock_success"] >= 1


def test_simulator_takes_its_config_explicitly() -> None:
    from specfault.sim import workloads
    from specfault.sim.bench import run

    assert not hasattr(workloads, "_KNOBS") and not hasattr(workloads, "protocol_knobs")
    built = workloads.build("pft", "speculative", 2, faults=50,
                            config=Config(knobs={"no_seq2_check": True}))
    assert built.engine.machine.config.knob("no_seq2_check") is True
    assert built.engine.machine.config.nr_cpus == 2
    built.engine.close()
    with pytest.raises(UnknownKnob):
        run("pft", "speculative", 2, faults=50, knobs={"no_seq2_chek": True})


def test_bench_refuses_an_unknown_knob_before_any_work(capsys) -> None:
    assert main(["bench", "-w", "pft", "--cpus", "2", "--faults", "100",
                 "--knob", "spf_vma_refcont=true"]) == 2
    err = capsys.readouterr().err
    assert "spf_vma_refcount" in err


def test_knobs_command_lists_the_registry(capsys) -> None:
    assert main(["knobs", "--json"]) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in out["knobs"]} == set(KNOBS)
    assert main(["knobs", "--kind", "mutant", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["knobs"]
    assert rows and all(r["kind"] == "mutant" for r in rows)


def test_a_registered_knob_that_is_not_a_field_is_a_keyword_too() -> None:
    # Config(no_seq2_check=True) once said "unknown knob 'no_seq2_check'
    # (did you mean 'no_seq2_check'?)": knobs that are not fields were only
    # accepted inside knobs={...}
    assert Config(no_seq2_check=True) == Config(knobs={"no_seq2_check": True})
    assert Config(no_seq2_check=True, knobs={"spf_vma_refcount": False}).knobs == {
        "no_seq2_check": True, "spf_vma_refcount": False}
    assert sf.Machine(no_seq2_check=True).config.knob("no_seq2_check") is True
    with pytest.raises(UnknownKnob, match="no_seq2_chek"):
        Config(no_seq2_chek=True)
