"""The stage job's exit status names the step that failed (cluster_repro.run_stage reports it by that status), and
each step runs only when the ones before it succeeded. DVC's command-line entry point is replaced here by a
recorder; the real steps run in tests/test_cluster_repro.py's pipeline on 2 workers."""

import pytest

from pipeline.cluster import stage_job


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


@pytest.mark.parametrize("failing, status, steps", [("repro", stage_job.REPRO_FAILED, 1),
                                                    ("push", stage_job.PUSH_FAILED, 2)])
def test_a_failed_dvc_step_stops_the_job_with_its_own_status(dvc_calls, failing, status, steps):
    calls, state = dvc_calls
    state["status"] = {failing: 1}
    assert stage_job.main(["generate@sine"]) == status
    assert len(calls) == steps
    assert stage_job.FAILED_STEP[status].startswith(f"dvc {failing}")


def test_objects_that_fail_to_push_fail_the_job(dvc_calls):
    _, state = dvc_calls
    state["pushed"] = (3, 1)
    assert stage_job.main(["evaluate@sine"]) == stage_job.OUTPUTS_FAILED
    assert stage_job.FAILED_STEP[stage_job.OUTPUTS_FAILED] == "pushing the outputs of its run-cache entry failed"


def test_an_exception_while_pushing_the_outputs_is_that_step_failing_not_a_crash(dvc_calls, monkeypatch, capsys):
    """Python exits with 1 on an uncaught exception; the job names the step instead, and logs the reason."""
    def refused(stage):
        raise PermissionError("storage is read-only")

    monkeypatch.setattr(stage_job, "push_entry_outputs", refused)
    assert stage_job.main(["evaluate@sine"]) == stage_job.OUTPUTS_FAILED
    assert "ERROR: PermissionError: storage is read-only" in capsys.readouterr().err


def test_no_step_status_is_one_python_uses_for_itself():
    assert not {1, 2} & set(stage_job.FAILED_STEP)


def test_a_job_without_exactly_one_stage_is_refused(dvc_calls, capsys):
    calls, _ = dvc_calls
    assert stage_job.main([]) == stage_job.USAGE and stage_job.main(["a", "b"]) == stage_job.USAGE
    assert calls == [] and "usage: python -m pipeline.cluster.stage_job STAGE" in capsys.readouterr().err
