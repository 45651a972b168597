"""``python -m app.measure`` end to end, briefly: its figures are machine-dependent, so only their
presence and sense are checked (no timed assertion)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.timeout(300)
def test_measure_runs_the_window_and_bench_and_reports_every_figure(capsys):
    from app.measure import main

    assert main(["--frames", "150", "--seconds", "0.5", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert set(runs) == {"window_live_capacity", "bench_live_capacity", "window_live_paced", "bench_live_paced",
                         "window_replay"}
    for name in ("window_live_capacity", "window_live_paced", "window_replay"):
        r = runs[name]
        assert r["error"] == "" and r["seconds"] >= 0.5 and r["analysed"] > 0
        assert 0.0 <= r["busy_share"] <= 1.0 and r["stall_max_ms"] >= 0.0
    assert runs["window_replay"]["busy_share"] == 0.0  # replay never yields the display
    assert runs["bench_live_capacity"]["fps"] > 0
