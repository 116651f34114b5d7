"""make run's ETA: each family's reference time scaled by how fast this machine trains and runs Python."""

from __future__ import annotations

import pytest

from pipelines import eta, localrun
from pipelines.families import all_families, get_family


def test_every_family_of_the_project_declares_its_reference_time():
    shipped = [f for f in all_families().values() if f.config_cls.__module__.startswith("pipelines.configs.")]
    assert len(shipped) >= 6
    assert all(f.quick_seconds and min(f.quick_seconds) > 0 for f in shipped)


def test_training_and_the_rest_scale_by_their_own_ratios(monkeypatch):
    monkeypatch.setattr(eta, "REFERENCE_CALIBRATION", {"train": 2.0, "python": 0.5})
    assert eta.expected_seconds((100.0, 20.0), {"train": 2.0, "python": 0.5}) == pytest.approx(120.0)
    # three times slower at training (no AVX-512), Python only a little
    assert eta.expected_seconds((100.0, 20.0), {"train": 6.0, "python": 0.6}) == pytest.approx(324.0)
    assert eta.expected_seconds((100.0, 20.0), None) is None
    assert eta.expected_seconds(None, {"train": 6.0, "python": 0.6}) is None


def test_make_run_says_the_machine_speed_and_the_zoos_expected_time(monkeypatch, capsys):
    monkeypatch.setattr(eta, "measured", lambda: dict(eta.REFERENCE_CALIBRATION, train=eta.REFERENCE_CALIBRATION[
        "train"] * 3))
    expected = localrun.expected_times(["classifiers", "sequences"], "quick")
    training, rest = get_family("sequences").quick_seconds
    assert expected["sequences"] == pytest.approx(3 * training + rest)
    out = capsys.readouterr().out
    assert "trains at 0.33x and runs Python at 1.00x the speed of the reference" in out
    assert f"the zoo should take about {eta.clock(sum(expected.values()))}" in out
    assert localrun.expected_times(["classifiers"], "smoke") == {}
    monkeypatch.setattr(eta, "measured", lambda: None)
    assert localrun.expected_times(["classifiers"], "quick") == {}
    assert "no ETA: the calibration failed" in capsys.readouterr().out


def test_clock_reads_like_a_person_would_say_it():
    assert [eta.clock(s) for s in (42, 65, 725.4, 3720)] == ["42 s", "1 min 05 s", "12 min 05 s", "1 h 02 min"]
