"""The Debezium connector's configuration, derived from the operational database's URL in settings."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from deploy.embedded.cdc import ConnectError, _properties, connector_config, connector_secrets, secrets_path
from schemas.cdc import topic
from lambdarec.settings import Settings

pytestmark = pytest.mark.unit


def test_the_embedded_database_is_the_default(settings):
    config = connector_config(settings)
    assert (config["database.hostname"], config["database.port"], config["database.dbname"]) == (
        "127.0.0.1", str(settings.embedded_postgres_port), "operational")
    assert config["plugin.name"] == "pgoutput" and config["table.include.list"] == "public.items,public.users"
    assert topic(settings.cdc_topic_prefix, "public.items") == "cdc.public.items"


def test_an_existing_database_is_read_from_its_url(settings):
    shop = settings.model_copy(update={"operational_db_url": "postgresql://cdc%40shop:p%3Ass@db.internal:6543/shop"})
    config = connector_config(shop)
    assert (config["database.user"], config["database.hostname"], config["database.port"],
            config["database.dbname"]) == ("cdc@shop", "db.internal", "6543", "shop")
    assert connector_secrets(shop) == {"database.password": "p:ss"}


def test_the_password_is_a_placeholder_the_workers_config_provider_resolves(settings):
    config = connector_config(settings)
    secrets = secrets_path(settings)
    assert config["database.password"] == f"${{file:{secrets}:database.password}}"
    assert secrets.parent == settings.secrets_root
    password = urlsplit(settings.operational_db).password
    assert password and connector_secrets(settings) == {"database.password": password}
    assert password not in json.dumps(config)


def test_secret_values_are_written_as_java_properties_read_them():
    # java.util.Properties: a backslash starts an escape, a leading space is skipped, \uXXXX is a UTF-16 unit
    assert _properties({"k": "a\\b c=d:e"}).splitlines()[1] == r"k=a\\b c=d:e"
    assert _properties({"k": " pw"}).splitlines()[1] == r"k=\ pw"
    assert _properties({"k": "é\n😀"}).splitlines()[1] == r"k=\u00e9\u000a\ud83d\ude00"


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "postgresql://u:p@h:5432/", "not a url"])
def test_a_url_that_is_not_postgres_is_refused(url):
    with pytest.raises(ConnectError, match="operational_db_url"):
        connector_config(Settings(operational_db_url=url))


