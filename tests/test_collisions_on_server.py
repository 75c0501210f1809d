"""Two runs of one deployment at once, as the real Prefect server on 127.0.0.1 orchestrates them.

prefect.yaml gives every deployment `concurrency_limit: 1` with collision strategy ENQUEUE: a second flow run
that a worker tries to start (the PENDING transition, where Prefect's server takes the deployment's slot)
while the first one runs waits in AwaitingConcurrencySlot; with CANCEL_NEW it is cancelled. The test proposes
the states a worker proposes, so no flow runs and nothing is trained."""

from __future__ import annotations

import pytest

from tests.ui.stack import Stack, prefect_server

DEPLOYMENT = "sppo-iteration/cpu-smollm2"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Stack:
    with prefect_server(tmp_path_factory.mktemp("prefect")) as stack:
        made = stack.cli("--no-prompt", "deploy", "--name", DEPLOYMENT)
        assert made.returncode == 0, made.stdout + made.stderr
        yield stack


def _propose(stack: Stack, flow_run_id: str, state_type: str) -> str:
    """What a worker does before it starts a run (PENDING) and the run itself (RUNNING, COMPLETED)."""
    return stack.post(f"/flow_runs/{flow_run_id}/set_state", {"state": {"type": state_type}})["status"]


def _state(stack: Stack, flow_run_id: str) -> tuple[str, str]:
    run = stack.flow_run(flow_run_id)
    return run["state_type"], run["state_name"]


def test_the_deployment_is_scheduled_to_advance_and_limited_to_one_run(deployed):
    deployment = deployed.get(f"/deployments/name/{DEPLOYMENT}")
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    (schedule,) = deployment["schedules"]
    assert schedule["parameters"] == {"iteration": "next"} and schedule["active"] is False
    assert deployment["parameters"]["iteration"] == 1, "a run started by hand still names its iteration"


def test_a_second_run_waits_for_the_first_then_starts(deployed):
    first = deployed.run_deployment(DEPLOYMENT, {"iteration": "next"})
    second = deployed.run_deployment(DEPLOYMENT, {"iteration": "next"})
    assert _propose(deployed, first, "PENDING") == "ACCEPT"
    assert _propose(deployed, first, "RUNNING") == "ACCEPT"
    assert _propose(deployed, second, "PENDING") != "ACCEPT"
    assert _state(deployed, second) == ("SCHEDULED", "AwaitingConcurrencySlot")
    assert _propose(deployed, first, "COMPLETED") == "ACCEPT"
    assert _propose(deployed, second, "PENDING") == "ACCEPT", "the slot is free once the first run ends"
    assert _propose(deployed, second, "COMPLETED") == "ACCEPT"


def test_with_cancel_new_the_second_run_is_cancelled(deployed):
    deployment = deployed.get(f"/deployments/name/{DEPLOYMENT}")
    deployed.request(
        "PATCH", f"/deployments/{deployment['id']}", {"concurrency_options": {"collision_strategy": "CANCEL_NEW"}}
    )
    first = deployed.run_deployment(DEPLOYMENT, {"iteration": "next"})
    second = deployed.run_deployment(DEPLOYMENT, {"iteration": "next"})
    assert _propose(deployed, first, "PENDING") == "ACCEPT"
    _propose(deployed, second, "PENDING")
    assert _state(deployed, second)[0] == "CANCELLED"
    assert _propose(deployed, first, "COMPLETED") == "ACCEPT"
