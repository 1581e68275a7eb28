"""The stage job's exit status names the step that failed (cluster_repro.run_stage reports it by that status), and
each step runs only when the ones before it succeeded. DVC's command-line entry point is replaced here by a
recorder; the real steps run in tests/test_cluster_repro.py's pipeline on 2 workers."""

import pytest

from pipeline import stage_job


@pytest.fixture
def dvc_calls(monkeypatch):
    """The DVC commands main() runs, with the exit status each returns (0 unless told), and the output push's
    (pushed, failed) counts."""
    import dvc.cli

    calls: list[list[str]] = []
    state = {"status": {}, "pushed": (4, 0)}

    def fake_dvc(args):
        calls.append(list(args))
        return state["status"].get(args[0], 0)

    monkeypatch.setattr(dvc.cli, "main", fake_dvc)
    monkeypatch.setattr(stage_job, "push_entry_outputs", lambda stage: state["pushed"])
    return calls, state


def test_the_steps_run_in_order_and_succeed(dvc_calls, capsys):
    calls, _ = dvc_calls
    assert stage_job.main(["train@sine-gru"]) == 0
    assert calls == [["repro", "--pull", "train@sine-gru"], ["push", "--run-cache", "train@sine-gru"]]
    assert "4 objects of the run-cache entry's outputs pushed, 0 failed" in capsys.readouterr().out


@pytest.mark.parametrize("failing, status, steps", [("repro", 1, 1), ("push", 2, 2)])
def test_a_failed_dvc_step_stops_the_job_with_its_own_status(dvc_calls, failing, status, steps):
    calls, state = dvc_calls
    state["status"] = {failing: 1}
    assert stage_job.main(["generate@sine"]) == status
    assert len(calls) == steps
    assert stage_job.FAILED_STEP[status].startswith(f"dvc {failing}")


def test_objects_that_fail_to_push_fail_the_job(dvc_calls):
    _, state = dvc_calls
    state["pushed"] = (3, 1)
    assert stage_job.main(["evaluate@sine"]) == 3
    assert stage_job.FAILED_STEP[3] == "pushing the outputs of its run-cache entry failed"


def test_a_job_without_exactly_one_stage_is_refused(dvc_calls, capsys):
    calls, _ = dvc_calls
    assert stage_job.main([]) == 1 and stage_job.main(["a", "b"]) == 1
    assert calls == [] and "usage: python -m pipeline.stage_job STAGE" in capsys.readouterr().err
