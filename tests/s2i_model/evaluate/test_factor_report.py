"""Factor agreement (issue 28) through `evaluate`, evaluation.json, the report and the comparison's
plan, on a small build of factors (`factorbuild`): an untrained S2I run and the lookup, shuffled
and real reference rows are evaluated as `make compare` evaluates them (judges and factor readers
fitted once, tiny settings); evaluation.json holds the factors block and its replicates, checked
by `untrusted.evaluation`; the report shows a factor-agreement column and a per (class, factor)
table whose every cell is that row's own number; a planted bad factors block is refused in one
line before anything is written; `plan` adds the shuffled row only for a build of factors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from s2i_data import untrusted
from s2i_data.readers import Build

from s2i_model.evaluate import factors as fe
from s2i_model.evaluate.evaluation import EvalConfig, evaluate
from s2i_model.evaluate.reference import write_reference
from s2i_model.evaluate.report import write_report
from s2i_model.evaluate.suite import CompareConfig, plan

import factorbuild as fb
from handmade_runs import s2i_run
from test_compare_content import page_tables

ROWS = ["s2i", "lookup", "shuffled", "real"]  # the report's order: models, then references floor to ceiling


@pytest.fixture(scope="session")
def factor_build(tmp_path_factory) -> Build:
    return Build.open(str(fb.factor_build_at(tmp_path_factory.getbasetemp())))


@pytest.fixture(scope="module")
def evaluated(factor_build, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("factor-compare")
    runs = root / "runs"
    data = str(factor_build)
    s2i_run(Path(data), runs / "s2i")
    for kind in ("lookup", "shuffled", "real"):
        write_reference(kind, runs / kind, data=data)
    results, logs = {}, []
    for name in ROWS:
        results[name] = evaluate(EvalConfig(run=str(runs / name), data=data, samples=2,
                                            proxy_cache=str(runs / "judges.pt"), proxy_epochs=1, factor_alpha=1.0),
                                 log=logs.append)
    report = write_report(runs, root / "report", "cpu")
    return {"runs": runs, "results": results, "logs": logs, "report": report, "out": root / "report"}


def test_evaluate_writes_factor_agreement_for_a_build_of_factors(evaluated, factor_build):
    runs, results = evaluated["runs"], evaluated["results"]
    names = [f.name for f in factor_build.factors]
    assert (runs / fe.FILE).is_file()  # the readers, beside the judges: fitted once for every row
    assert sum("factor reader baby_size" in m for m in evaluated["logs"]) == 1
    for row in ROWS:
        saved = json.loads((runs / row / "evaluation.json").read_text())
        block = saved["factors"]
        assert list(block["per_factor"]) == names and list(block["readers"]["per_factor"]) == names
        assert block["mean"] == pytest.approx(sum(e["spearman"] for e in block["per_factor"].values()) / len(names))
        assert "train split" in block["readers"]["trained_on"] and block["readers"]["alpha"] == 1.0
        reps = saved["replicates"]["factors"]
        assert len(reps["mean"]) == len(saved["replicates"]["mean"]["class_agreement"]) == 200
        assert set(reps["per_factor"]) == set(names) and set(reps["per_factor"]["fireworks_count"]) == {"spearman",
                                                                                                         "accuracy"}
        checked = untrusted.evaluation(saved, "evaluation.json")  # what a report reads: kept whole
        assert checked["factors"]["per_factor"] == block["per_factor"]
        assert checked["replicates"]["factors"]["mean"] == reps["mean"]
        assert saved["ident"]["factors"]["alpha"] == 1.0
    # the lookup's sound classifier names every test sound's class, so its pictures are one per class: ρ = 0
    lookup = json.loads((runs / "lookup" / "reference.json").read_text())["classifier"]
    assert lookup["test_accuracy"] == 1.0
    assert all(e["spearman"] == 0.0 for e in results["lookup"]["factors"]["per_factor"].values())
    # measured again with nothing changed: up to date, readers and all
    again = evaluate(EvalConfig(run=str(runs / "real"), data=str(factor_build), samples=2,
                                proxy_cache=str(runs / "judges.pt"), proxy_epochs=1, factor_alpha=1.0),
                     log=lambda m: None)
    assert again == json.loads((runs / "real" / "evaluation.json").read_text())


def test_the_evaluate_command_prints_factor_agreement_per_class_and_factor(evaluated):
    from s2i_model.cli import _print_evaluation, console

    res = evaluated["results"]["real"]
    with console.capture() as cap:
        _print_evaluation(res)
    out = cap.get()
    said = "factor agreement (Spearman ρ of true factors and those read in the pictures)"
    assert f"{said}: {res['factors']['mean']:+.2f}" in out
    for name, e in res["factors"]["per_factor"].items():
        line = next(li for li in out.splitlines() if f" {name} " in f" {li} ")
        assert line.split()[0] == e["class"] and f"{e['spearman']:+.2f}" in line, line
        if e["kind"] == "count":
            assert f"{100 * e['accuracy']:.1f}%" in line


def corr_cell(value, interval) -> str:
    return f"{value:+.2f}" + (f" [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "")


def test_the_report_shows_each_rows_own_factor_agreement(evaluated, factor_build):
    cmp = evaluated["report"]["comparison"]
    assert [r["name"] for r in cmp["rows"]] == ROWS
    evs = {n: json.loads((evaluated["runs"] / n / "evaluation.json").read_text()) for n in ROWS}
    for r in cmp["rows"]:
        ev = evs[r["name"]]["factors"]
        assert r["factor_agreement"] == {"value": ev["mean"], "interval": ev["interval"]}, r["name"]
    table = cmp["factors"]
    assert [f["name"] for f in table["factors"]] == [f.name for f in factor_build.factors]
    for r in table["rows"]:
        ev = evs[r["name"]]["factors"]["per_factor"]
        for name, cell in r["per_factor"].items():
            assert cell["spearman"] == {"value": ev[name]["spearman"], "interval": ev[name]["interval"]}
            if ev[name]["kind"] == "count":
                assert cell["accuracy"] == {"value": ev[name]["accuracy"], "interval": ev[name]["accuracy_interval"]}
    page = page_tables(evaluated["out"] / "index.html")
    for row in page["models"]:
        ev = evs[row["row"]]["factors"]
        assert row["factor agr."] == corr_cell(ev["mean"], ev["interval"]), row
    assert [row["row"] for row in page["factors"]] == ROWS
    for row in page["factors"]:
        ev = evs[row["row"]]["factors"]["per_factor"]
        for name, e in ev.items():
            assert row[name.replace("_", " ") + " ρ"] == corr_cell(e["spearman"], e["interval"]), (row["row"], name)
            if e["kind"] == "count":
                lo, hi = e["accuracy_interval"]
                want = f"{100 * e['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                assert row[name.replace("_", " ") + " acc."] == want


def test_the_page_with_factors_fits_a_laptop_screen(evaluated, chromium):
    chromium.set_window_size(1280, 800)
    chromium.get((evaluated["out"] / "index.html").as_uri())
    width = chromium.execute_script("return document.documentElement.clientWidth")
    assert chromium.execute_script("return document.documentElement.scrollWidth") <= width
    for tid in ("models", "factors"):
        left, right = chromium.execute_script(f"const r = document.getElementById('{tid}').getBoundingClientRect();"
                                              "return [r.left, r.right];")
        assert 0 <= left and right <= width, (tid, left, right, width)
        heights = chromium.execute_script(f"return [...document.querySelectorAll('#{tid} tbody tr')]"
                                          ".map(r => r.getBoundingClientRect().height)")
        assert len(heights) == len(ROWS) and max(heights) <= 2.5 * 16, (tid, heights)


# ---- a planted bad factors block is refused --------------------------------------------------------

def _edit(ev: dict, case: str) -> str:
    """Plant ``case`` in an evaluation's factors block; returns the field the refusal must name."""
    block, reps = ev["factors"], ev["replicates"]["factors"]
    first = next(iter(block["per_factor"]))
    if case == "NaN spearman":
        block["per_factor"][first]["spearman"] = float("nan")
        return f"factors.per_factor.{first}.spearman"
    if case == "spearman above one":
        block["per_factor"][first]["spearman"] = 1.5
        return f"factors.per_factor.{first}.spearman"
    if case == "mean as text":
        block["mean"] = "<script>"
        return "factors.mean"
    if case == "name with a slash":
        block["per_factor"]["../x"] = block["per_factor"].pop(first)
        return "factors.per_factor name"
    if case == "huge list of factors":
        block["per_factor"].update({f"f{i}": block["per_factor"][first] for i in range(1001)})
        return "factors.per_factor: more than 1000 factors"
    if case == "class of no build":
        block["per_factor"][first]["class"] = "cat"
        return f"factors.per_factor.{first}.class"
    if case == "kind unknown":
        block["per_factor"][first]["kind"] = "<b>"
        return f"factors.per_factor.{first}.kind"
    if case == "accuracy above one":
        block["per_factor"]["fireworks_count"]["accuracy"] = 2.0
        return "factors.per_factor.fireworks_count.accuracy"
    if case == "interval upside down":
        block["interval"] = [0.5, -0.5]
        return "factors.interval"
    if case == "reader quality as text":
        block["readers"]["per_factor"][first]["val_spearman"] = "<b>"
        return f"factors.readers.per_factor.{first}.val_spearman"
    if case == "replicates of another length":
        reps["mean"] = reps["mean"][:-1]
        return "replicates"
    if case == "huge replicate list":
        reps["per_factor"][first]["spearman"] = [0.0] * 10_001
        return f"replicates.factors.per_factor.{first}.spearman"
    if case == "replicate NaN":
        reps["mean"][0] = float("nan")
        return "replicates.factors.mean[0]"
    if case == "replicates of no factor":
        reps["per_factor"]["ghost"] = reps["per_factor"][first]
        return "replicates.factors.per_factor names 'ghost'"
    raise AssertionError(case)


CASES = ["NaN spearman", "spearman above one", "mean as text", "name with a slash", "huge list of factors",
         "class of no build", "kind unknown", "accuracy above one", "interval upside down", "reader quality as text",
         "replicates of another length", "huge replicate list", "replicate NaN", "replicates of no factor"]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_factors_block_is_refused_before_anything_is_written(evaluated, tmp_path, case):
    runs = tmp_path / "runs"
    for name in ("lookup", "real"):
        shutil.copytree(evaluated["runs"] / name, runs / name)
    path = runs / "real" / "evaluation.json"
    ev = json.loads(path.read_text())
    field = _edit(ev, case)
    path.write_text(json.dumps(ev))  # json writes NaN as NaN, as a careless writer would
    with pytest.raises(untrusted.Untrusted) as err:
        write_report(runs, tmp_path / "report", "cpu")
    said = str(err.value)
    assert "evaluation.json" in said and field in said and "\n" not in said, said
    assert not (tmp_path / "report").exists()


def test_the_shuffled_row_joins_the_comparison_only_for_a_build_of_factors(factor_build, tmp_path):
    with_factors = plan(CompareConfig(data=str(factor_build), runs=str(tmp_path), models=["s2i"], preset="test"))[1]
    assert ("shuffled", "shuffled", "") in with_factors
    # the same build, its build.json without the factors record: no shuffled row
    plain = tmp_path / "plain"
    shutil.copytree(str(factor_build), plain)
    build_json = json.loads((plain / "build.json").read_text())
    del build_json["factors"]
    (plain / "build.json").write_text(json.dumps(build_json))
    assert not Build.open(str(plain)).factors
    refs = plan(CompareConfig(data=str(plain), runs=str(tmp_path), models=["s2i"], preset="test"))[1]
    assert [name for name, *_ in refs] == ["real", "lookup", "chance", "nearest-sound-s2i"]
    # asked for by name, it is a reference like the others
    named = plan(CompareConfig(data=str(plain), runs=str(tmp_path), models=["s2i"], preset="test",
                               references=["real", "shuffled"]))[1]
    assert named == [("real", "real", ""), ("shuffled", "shuffled", "")]


def test_seeds_are_joined_like_every_other_column(evaluated, tmp_path):
    """Two seeds of a row: its factor agreement and each factor's ρ are the mean of the seeds' with
    the interval `intervals.over_seeds` draws from their stored replicates."""
    from s2i_model.evaluate import intervals

    runs = tmp_path / "runs"
    shutil.copytree(evaluated["runs"] / "lookup", runs / "lookup")
    evs = []
    for seed, shift in ((0, 0.0), (1, -0.25)):
        run = runs / f"real-seed{seed}"
        shutil.copytree(evaluated["runs"] / "real", run)
        ev = json.loads((run / "evaluation.json").read_text())
        block, reps = ev["factors"], ev["replicates"]["factors"]
        for name, e in block["per_factor"].items():  # the second seed's factors read worse
            e["spearman"] = max(-1.0, e["spearman"] + shift)
            reps["per_factor"][name]["spearman"] = [max(-1.0, v + shift) for v in reps["per_factor"][name]["spearman"]]
        block["mean"] = max(-1.0, block["mean"] + shift)
        reps["mean"] = [max(-1.0, v + shift) for v in reps["mean"]]
        (run / "evaluation.json").write_text(json.dumps(ev))
        evs.append(ev)
    report = write_report(runs, tmp_path / "report", "cpu")
    real = next(r for r in report["comparison"]["rows"] if r["name"] == "real")
    assert real["seeds"] == [None, None]  # two runs joined in one row
    value, ci = intervals.over_seeds([e["factors"]["mean"] for e in evs],
                                     [e["replicates"]["factors"]["mean"] for e in evs])
    assert real["factor_agreement"] == {"value": value, "interval": ci}
    assert value == pytest.approx((evs[0]["factors"]["mean"] + evs[1]["factors"]["mean"]) / 2)
    row = next(r for r in report["comparison"]["factors"]["rows"] if r["name"] == "real")
    for name, cell in row["per_factor"].items():
        v, c = intervals.over_seeds([e["factors"]["per_factor"][name]["spearman"] for e in evs],
                                    [e["replicates"]["factors"]["per_factor"][name]["spearman"] for e in evs])
        assert cell["spearman"] == {"value": v, "interval": c}, name
