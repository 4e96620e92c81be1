"""The doctor's child-to-parent records: typed on both sides, parsed once at the boundary, every
field checked, a bad line refused with a reason that reaches the report."""

from __future__ import annotations

import json

import pytest

from hal.contract import Finding
from hal.doctor import records as r
from hal.doctor.isolate import ChildResult
from hal.doctor.report import Report

FINDING = r.sourced(Finding("x-ok", "ok", "fine", "nothing"), "cpu")
DATA = {"name": "cpu", "available": True, "reason": "always", "device_count": 1}
EVERY_KIND = [
    r.Step("load plugins"),
    r.Step("backends", backends=("cpu", "toy")),
    r.Step("import plugin p", plugin="p"),
    r.Sections({"system": {"os": "Linux"}, "hardware": [], "environment": {}}, (FINDING,)),
    r.TorchInfo({"version": "2.13.0"}),
    r.BackendDescribed("cpu", DATA, (FINDING,)),
    r.SelectionMade({"backend": "cpu", "device": "cpu:0", "candidates": [
        {"name": "cpu", "device_count": 1}]}, None),
    r.SelectionMade(None, {"type": "ConfigError", "message": "bad"}),
    r.SmokeRan({"device": "cpu", "steps": [
        {"name": "allocate", "ok": True, "seconds": 0.1, "detail": "1 MiB", "error": None},
        {"name": "matmul", "ok": False, "seconds": 0.0, "detail": "", "error": "E: x"}]}),
    r.PluginFindings((FINDING,)),
    r.PluginsListed(({"name": "cpu", "backends": ["cpu"]},)),
    r.Hung("backend toy", "toy", "probe", "no answer within 2 s"),
    r.StepFailed("selection", None, "selection", "exited", "it called sys.exit(3)"),
    r.PluginsError("HAL_PLUGINS is malformed"),
    r.Done(),
]


def test_every_kind_is_listed_and_survives_its_json_line() -> None:
    assert {type(rec) for rec in EVERY_KIND} == set(r.KINDS.values())
    for rec in EVERY_KIND:
        assert r.decode(r.encode(rec)) == rec
        assert rec["type"] == rec.KIND == json.loads(r.encode(rec))["type"]


@pytest.mark.parametrize(("line", "says"), [
    ("not json", "not JSON"),
    ("[1, 2]", "a JSON list"),
    ('{"type": "gossip"}', "unknown record type 'gossip'"),
    ('{"step": "x"}', "unknown record type 'None'"),
    ('{"type": "step"}', "step record has no 'step'"),
    ('{"type": "step", "step": 3}', "step record.step is a int, expected str"),
    ('{"type": "step", "step": "s", "backends": ["a", 1]}', "backends holds a value"),
    ('{"type": "torch", "data": []}', "torch record.data is a list, expected dict"),
    ('{"type": "backend", "name": "b", "data": {"name": "b", "available": 1, "reason": "",'
     ' "device_count": 0}, "findings": []}', "data.available is a int, expected bool"),
    ('{"type": "backend", "name": "b", "data": {"name": "b", "available": true, "reason": "",'
     ' "device_count": true}, "findings": []}', "device_count is a bool, expected a number"),
    ('{"type": "plugin_findings", "findings": [{"id": "a", "severity": "fatal", "message": "",'
     ' "fix": "", "source": "p"}]}', "findings[0].severity 'fatal' is not one of ok, info"),
    ('{"type": "plugin_findings", "findings": ["a"]}', "findings[0] is a str, expected an object"),
    ('{"type": "sections", "data": {"system": {}}, "findings": []}', "data has no 'hardware'"),
    ('{"type": "step_failed", "step": "s", "backend": null, "what": "w", "outcome": "hung",'
     ' "detail": ""}', "outcome 'hung' is not exited"),
    ('{"type": "smoke", "data": {"device": "cpu", "steps": [{"name": "a", "ok": true,'
     ' "seconds": 1}]}}', "steps[0] has no 'detail'"),
    ('{"type": "done", "protocol": 99}', "protocol 99, this hal speaks 1"),
    ('{"type": "selection", "data": {"backend": "b", "device": "b:x", "candidates": []},'
     ' "error": null}', "device 'b:x' is not a device"),
    ('{"type": "selection", "data": {"backend": "b", "device": "b", "candidates": [{"name": "b",'
     ' "device_count": "2"}]}, "error": null}', "candidates[0].device_count is a str"),
    ('{"type": "plugins", "data": [{"backends": []}]}', "data[0] has no 'name'"),
])
def test_a_malformed_line_is_refused_naming_the_field(line: str, says: str) -> None:
    with pytest.raises(r.RecordError) as caught:
        r.decode(line)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_an_overlong_line_is_refused_before_parsing() -> None:
    with pytest.raises(r.RecordError, match="over the"):
        r.decode('{"type": "torch", "data": "' + "x" * r.MAX_LINE + '"}')


def test_a_refused_line_becomes_a_finding_and_the_rest_is_kept() -> None:
    report = Report.start()
    result = ChildResult((r.TorchInfo({"version": "2.13.0"}), r.Done()), "done",
                         rejected=("unknown record type 'gossip'; expected one of ...",))
    report.fold(result)
    assert report.torch == {"version": "2.13.0"}
    (finding,) = report.found
    assert (finding.finding.id, finding.severity, finding.source) == (
        "doctor-record-invalid", "warn", "doctor")
    assert "gossip" in finding.finding.message


def test_records_fold_by_kind_and_a_backend_once_by_name() -> None:
    report = Report.start()
    newer = dict(DATA, reason="rerun")
    report.fold(ChildResult((*EVERY_KIND, r.BackendDescribed("cpu", newer)), "done"))
    assert report.backends == [newer]
    assert report.selection is None and report.selection_error == {"type": "ConfigError",
                                                                  "message": "bad"}
    ids = [f.finding.id for f in report.found]
    assert ids.count("x-ok") == 3 and "probe-hung" in ids and "doctor-step-exited" in ids
    assert "plugins-config" in ids and report.plugins == [{"name": "cpu", "backends": ["cpu"]}]

