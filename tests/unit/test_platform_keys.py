"""What `lambdarec up` provisions: the Airflow tasks' admin key, handed over in their environment only."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from lambdarec import api_keys
from lambdarec.lake import Lake
from deploy.components import API_KEY_ENV, plan
from deploy.up import UP_KEY_NAME, operator_key_problem, preflight, provision_keys

pytestmark = pytest.mark.unit

ALL_BUT_AIRFLOW_AND_SERVING = {"speed", "cdc", "prometheus"}


@pytest.fixture
def keyed(settings):
    return settings.model_copy(update={"auth": "keys"})


def test_each_up_makes_a_fresh_admin_key_and_revokes_the_last_ones(keyed):
    first = provision_keys(keyed, ALL_BUT_AIRFLOW_AND_SERVING)
    second = provision_keys(keyed, ALL_BUT_AIRFLOW_AND_SERVING)
    tokens = [s.api_key.get_secret_value() for s in (first, second)]
    found = api_keys.keys(Lake(keyed))
    ids = [api_keys.key_id_of(token) for token in tokens]
    assert [found[i].name for i in ids] == [UP_KEY_NAME] * 2 and found[ids[1]].scopes == {"admin"}
    assert not found[ids[0]].live and found[ids[1]].live and found[ids[1]].matches(tokens[1])


def test_no_key_is_made_where_nothing_needs_one(keyed):
    operator = keyed.model_copy(update={"api_key": SecretStr("lrk_0123456789abcdef_operators-own")})
    for settings, without in ((keyed, {"airflow"}), (keyed, {"serving"}),
                              (keyed.model_copy(update={"auth": "open"}), set()), (operator, set())):
        assert provision_keys(settings, without) is settings
    assert api_keys.keys(Lake(keyed)) == {}


def test_only_the_airflow_processes_get_the_key(keyed):
    settings = provision_keys(keyed, ALL_BUT_AIRFLOW_AND_SERVING)
    token = settings.api_key.get_secret_value()
    components = plan(settings, without={"speed", "cdc", "prometheus"})
    given = {c.name for c in components if c.env.get(API_KEY_ENV) == token}
    assert given == {"airflow-db-migrate", "airflow-api-server", "airflow-dag-processor", "airflow-scheduler",
                     "airflow-triggerer"}
    assert all(API_KEY_ENV not in c.env for c in components if c.name not in given)
    assert all(token not in repr(c) and token not in " ".join(c.argv) for c in components)


def test_an_operators_own_key_must_be_a_live_admin_key_of_this_lake(keyed):
    lake = Lake(keyed)
    _, reader = api_keys.create(lake, "reader", ["read"])
    admin, token = api_keys.create(lake, "ops", ["admin"])
    with_key = lambda value: keyed.model_copy(update={"api_key": SecretStr(value)})  # noqa: E731
    assert operator_key_problem(keyed) is None
    assert operator_key_problem(with_key(token)) is None
    assert "admin scope" in operator_key_problem(with_key(reader))
    assert "not a live key" in operator_key_problem(with_key(token[:-2] + "xx"))
    api_keys.revoke(lake, admin.key_id)
    assert "not a live key" in operator_key_problem(with_key(token))


def test_up_refuses_open_mode_off_loopback(keyed):
    opened = keyed.model_copy(update={"auth": "open", "serve_host": "0.0.0.0"})
    _, problems = preflight(opened, {"speed", "cdc", "prometheus", "airflow"}, 18080)
    assert [p for p in problems if "auth=open" in p]
    _, problems = preflight(opened.model_copy(update={"serve_host": "127.0.0.1"}),
                            {"speed", "cdc", "prometheus", "airflow"}, 18080)
    assert not [p for p in problems if "auth=open" in p]
