"""A flow run's overrides cannot switch trust_remote_code on unless the worker allows it
(SPPO_ALLOW_REMOTE_CODE=1): whoever may start a deployment run would otherwise run hub code on the workers."""

from __future__ import annotations

import pytest

from flows.sppo_campaign import sppo_campaign
from flows.sppo_iteration import sppo_iteration
from sppo.config import ConfigError, check_remote_code_overrides, load_recipe, remote_code_fields

SWITCHED_ON = [
    (["model.trust_remote_code=true"], "model.trust_remote_code"),
    (["model.trust_remote_code=yes"], "model.trust_remote_code"),
    (["judge.type=reward_model", "judge.trust_remote_code=True"], "judge.trust_remote_code"),
    (["evaluate.judge={type: llm, model: m, trust_remote_code: true}"], "evaluate.judge.trust_remote_code"),
    (["judge.type=pairrm", "judge.trust_remote_code=1"], "judge.trust_remote_code"),
]


@pytest.mark.parametrize(("overrides", "field"), SWITCHED_ON)
def test_an_override_switching_remote_code_on_is_refused(overrides, field, monkeypatch):
    monkeypatch.delenv("SPPO_ALLOW_REMOTE_CODE", raising=False)
    assert remote_code_fields(overrides) == [field]
    with pytest.raises(ConfigError, match=rf"override of {field} refused: .*SPPO_ALLOW_REMOTE_CODE=1") as err:
        check_remote_code_overrides(overrides)
    assert "\n" not in str(err.value)


def test_the_flows_refuse_it_before_any_work(monkeypatch, tmp_path):
    monkeypatch.delenv("SPPO_ALLOW_REMOTE_CODE", raising=False)
    overrides = [f"store={tmp_path / 'store'}", "model.trust_remote_code=true"]
    # The flows' own functions, as a worker calls them for a deployment run (no stage starts).
    with pytest.raises(ConfigError, match="override of model.trust_remote_code refused"):
        sppo_iteration.fn(run="policy", iteration=1, config="configs/smoke.yaml", overrides=overrides)
    with pytest.raises(ConfigError, match="override of model.trust_remote_code refused"):
        sppo_campaign.fn(run="policy", iterations=1, config="configs/smoke.yaml", overrides=overrides)
    assert not (tmp_path / "store").exists()


def test_the_worker_may_allow_it(monkeypatch):
    monkeypatch.setenv("SPPO_ALLOW_REMOTE_CODE", "1")
    check_remote_code_overrides(["model.trust_remote_code=true"])
    assert load_recipe(None, ["model.trust_remote_code=true"]).model.trust_remote_code


@pytest.mark.parametrize("value", ["false", "False", "no", "0"])
def test_switching_it_off_or_other_fields_is_always_allowed(value, monkeypatch):
    monkeypatch.delenv("SPPO_ALLOW_REMOTE_CODE", raising=False)
    check_remote_code_overrides([f"model.trust_remote_code={value}", "train.learning_rate=1e-6"])
