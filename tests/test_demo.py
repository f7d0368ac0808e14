"""The demo end to end on the bundled reference models, reduced in size."""

import json

from tokencache import cli


def test_demo_end_to_end_quick(tmp_path):
    out = tmp_path / "demo"
    code = cli.main(["demo", "--quick", "--out", str(out), "--json"])
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert code == 0, [r for r in rows if r["error"]]
    families = {r["family"] for r in rows}
    assert families == {"unet", "dit", "pixart", "flux", "wan"}
    for fam in families:
        names = [r["method"] for r in rows if r["family"] == fam]
        assert names[0] == "baseline" and len(names) >= 4
        assert (out / f"grid_{fam}.png").stat().st_size > 1000
    unet = {r["method"]: r for r in rows if r["family"] == "unet"}
    assert {"dato:fast", "deepcache:balanced", "tome:balanced", "dato:searched-balanced"} <= set(unet)
    assert unet["dato:fast"]["macs_ratio"] < unet["dato:balanced"]["macs_ratio"] < 1.0
    assert all(r["speedup"] > 0 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert "| unet | dato:fast |" in (out / "report.md").read_text()
