"""docs/BENCHMARKS.md keeps one section per benchmark and mode: a new run replaces the last."""

from benchmarks import report


def test_a_new_run_replaces_its_own_section_and_keeps_the_others(tmp_path, monkeypatch):
    doc = tmp_path / "BENCHMARKS.md"
    monkeypatch.setattr(report, "DOCS", doc)
    report.publish(["## DTW speed (2026-11-24)", "", "old full"], True)
    report.publish(["## DTW speed (2026-11-24, --quick)", "", "old quick"], True)
    report.publish(["## Latency (2026-11-24)", "", "latency"], True)
    report.publish(["## DTW speed (2026-11-25)", "", "new full"], True)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "old full" not in text and "new full" in text and "old quick" in text
    assert text.index("new full") < text.index("old quick") < text.index("latency")
    assert text.count("## ") == 3


def test_no_write_leaves_the_file_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "DOCS", tmp_path / "BENCHMARKS.md")
    report.publish(["## DTW speed (2026-11-24)", "", "figures"], False)
    assert not (tmp_path / "BENCHMARKS.md").exists()
    assert "figures" in capsys.readouterr().out
