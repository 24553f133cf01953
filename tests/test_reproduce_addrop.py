"""`eval/reproduce_addrop.py`'s scheduling: the paper protocol's run order as finished runs decide it, and the
per-run lock that lets a second job (another core) share the work without training a run twice."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reproduce_addrop", ROOT / "eval" / "reproduce_addrop.py")
R = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = R  # dataclasses look their module up there
_spec.loader.exec_module(R)


def _args() -> argparse.Namespace:
    return argparse.Namespace(seeds=[0, 1], lrs=[1e-5, 3e-5], p_grid=[0.1, 0.3], q_grid=[0.2], layers="1",
                              lr_per_method=True, metric="accuracy", variants=["plain", "addrop", "rd"])


def _row(setting, dev: float) -> dict:
    return {"size": setting.size, "lr": f"{setting.lr:g}", "variant": setting.variant, "seed": setting.seed,
            "p": setting.p, "q": setting.q, "dev_accuracy": dev}


def _describe(settings) -> list[tuple]:
    return [(s.lr, s.variant, s.seed, s.p, s.q) for s in settings]


def _todo(rows: list[dict], args: argparse.Namespace) -> list[tuple]:
    """What `run_all` would train next, in order: the planned runs not yet finished."""
    done = {R._row_key(r) for r in rows}
    return _describe(s for s in R.plan(rows, 500, args) if s.key() not in done)


def test_plan_stops_where_the_finished_runs_stop_deciding():
    args = _args()
    centre = (0.3, 0.2)  # the grid's centre (the second of two p values)
    first = [(1e-5, "plain", 0, *R.FIXED_PQ), (3e-5, "plain", 0, *R.FIXED_PQ), (1e-5, "addrop", 0, *centre),
             (3e-5, "addrop", 0, *centre)]
    assert _todo([], args) == first  # nothing finished: the lr runs of both methods, then nothing is decided
    dev = {"plain": {1e-5: 0.80, 3e-5: 0.82}, "addrop": {1e-5: 0.85, 3e-5: 0.81}}
    rows = [_row(R.Setting(500, lr, v, seed, p, q, "1"), dev[v][lr]) for lr, v, seed, p, q in first]
    # AD-DROP's lr is 1e-5: the rest of its p, q grid there (the centre ran); plain's seed 0 is its lr run
    assert _todo(rows, args) == [(1e-5, "addrop", 0, 0.1, 0.2)]
    rows.append(_row(R.Setting(500, 1e-5, "addrop", 0, 0.1, 0.2, "1"), 0.84))  # the centre stays best
    # every seed of plain and AD-DROP at their dev-chosen settings, then the ablation at AD-DROP's
    assert _todo(rows, args) == [(3e-5, "plain", 1, *R.FIXED_PQ), (1e-5, "addrop", 1, *centre),
                                 (1e-5, "rd", 0, *centre), (1e-5, "rd", 1, *centre)]


def test_a_claimed_run_is_skipped_by_a_second_claim_and_free_once_released(tmp_path):
    setting = R.Setting(500, 1e-5, "addrop", 0, 0.3, 0.2, "1")
    with R.claim(tmp_path, setting) as first:
        assert first
        with R.claim(tmp_path, setting) as second:  # another open file: flock refuses it as it would a job
            assert not second
        with R.claim(tmp_path, R.Setting(500, 3e-5, "addrop", 0, 0.3, 0.2, "1")) as other:
            assert other  # a different run is free
    with R.claim(tmp_path, setting) as again:
        assert again


def test_the_statistics_line_counts_paired_seeds_per_planned_size():
    args = _args()
    args.sizes, args.noun = [500, 1000], "tweets"
    centre = (0.3, 0.2)
    rows = [_row(R.Setting(500, lr, "plain", 0, *R.FIXED_PQ, "1"), 0.8 if lr == 3e-5 else 0.7) for lr in args.lrs]
    rows += [_row(R.Setting(500, lr, "addrop", 0, p, 0.2, "1"), 0.9 if (lr, p) == (1e-5, 0.3) else 0.7)
             for lr in args.lrs for p in args.p_grid]
    rows.append(_row(R.Setting(500, 3e-5, "plain", 1, *R.FIXED_PQ, "1"), 0.8))  # plain's seed 1, not AD-DROP's
    # 1,000 tweets has no runs: it counts 0, not the 500-tweet seeds
    assert R._seeds_so_far(rows, args) == ("Of the 2 planned training seeds per arm, fine-tuning and AD-DROP share "
                                           "1 at 500 tweets and 0 at 1000 tweets so far")
    rows.append(_row(R.Setting(500, 1e-5, "addrop", 1, *centre, "1"), 0.9))
    args.sizes = [500]
    assert R._seeds_so_far(rows, args) == "2 training seeds per arm"
    assert R._unfinished(rows, args) == [500]  # fine-tuning and AD-DROP are done, the ablation (RD) is not
    rows += [_row(R.Setting(500, 1e-5, "rd", seed, *centre, "1"), 0.8) for seed in args.seeds]
    assert R._unfinished(rows, args) == []


def test_the_ablations_are_tested_against_ad_drop_on_the_same_seeds():
    """Table 2's claims (GA beats RD, cross-tuning helps) are AD-DROP − ablation, not ablation − fine-tuning."""
    args = _args()
    # dev selection: the runs that lose (the other lr of each method, the p grid's other point)
    runs = {R.Setting(500, 1e-5, "plain", 0, *R.FIXED_PQ, "1"): (0.7, 0.0),
            R.Setting(500, 3e-5, "addrop", 0, 0.3, 0.2, "1"): (0.7, 0.0),
            R.Setting(500, 1e-5, "addrop", 0, 0.1, 0.2, "1"): (0.7, 0.0)}
    test = {"plain": [0.80, 0.81, 0.82], "addrop": [0.83, 0.83, 0.84], "rd": [0.82, 0.84, 0.81]}
    for v, accs in test.items():
        lr, pq = (3e-5, R.FIXED_PQ) if v == "plain" else (1e-5, (0.3, 0.2))
        runs |= {R.Setting(500, lr, v, seed, *pq, "1"): (0.8, acc) for seed, acc in enumerate(accs)}
    rows = [_row(s, dev) | {"test_accuracy": acc} for s, (dev, acc) in runs.items()]
    tests = R._tests(rows, "test_accuracy", args)
    assert [t["variant"] for t in tests] == ["plain", "rd"]
    plain, rd = tests
    assert [round(x, 6) for x in plain["per_seed"]] == [3.0, 2.0, 2.0]
    assert [round(x, 6) for x in rd["per_seed"]] == [1.0, -1.0, 3.0]
    assert all(t["holm_perm"] >= t["cmp"].p_value for t in tests)
    assert R._verdict(plain) == "unresolved"  # 3 seeds: the exact sign-flip test cannot go below 0.25
    plain["holm_perm"] = 0.01
    assert R._verdict(plain) == "AD-DROP better than fine-tuning"
