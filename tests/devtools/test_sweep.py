"""The epsilon sweep writes its table and plot, and larger epsilons give stronger adversaries."""

import csv

import pytest

pytestmark = pytest.mark.slow


def test_sweep_writes_table_and_plot(tmp_path, sim_series):
    pytest.importorskip("torch")
    from stream_app.core.profiles import load_profile
    from stream_app.devtools.sweep import epsilon_sweep
    from training.pipeline import TrainOptions
    from training.train import TrainConfig

    options = TrainOptions(window_sizes=(24, 16), models=("lstm",), n_estimators=50,
                           train=TrainConfig(epochs=2, max_train_windows=1500))
    results = epsilon_sweep(sim_series[0][:2], tmp_path, load_profile("chemical"), options,
                            epsilons=(0.0, 0.25, 2.0))
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert [float(r["epsilon"]) for r in rows] == [0.0, 0.25, 2.0]
    for r in results:
        assert 0 <= r["f1"] <= 1 and 1.5 <= r["limit"] <= 6.0
    # a bigger perturbation budget makes adversarial rows easier to tell from normal ones
    assert results[-1]["f1_adversarial"] >= results[0]["f1_adversarial"]
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| epsilon |" in (tmp_path / "sweep.md").read_text()
