"""The Debezium connector's configuration, derived from the operational database's URL in settings."""

from __future__ import annotations

import pytest

from lambdarec.cdc import ConnectError, connector_config, topic
from lambdarec.settings import Settings

pytestmark = pytest.mark.unit


def test_the_embedded_database_is_the_default(settings):
    config = connector_config(settings)
    assert (config["database.hostname"], config["database.port"], config["database.dbname"]) == (
        "127.0.0.1", str(settings.embedded_postgres_port), "operational")
    assert config["plugin.name"] == "pgoutput" and config["table.include.list"] == "public.items,public.users"
    assert topic(settings, "public.items") == "cdc.public.items"


def test_an_existing_database_is_read_from_its_url(settings):
    shop = settings.model_copy(update={"operational_db_url": "postgresql://cdc%40shop:p%3Ass@db.internal:6543/shop"})
    config = connector_config(shop)
    assert (config["database.user"], config["database.password"], config["database.hostname"],
            config["database.port"], config["database.dbname"]) == ("cdc@shop", "p:ss", "db.internal", "6543", "shop")


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "postgresql://u:p@h:5432/", "not a url"])
def test_a_url_that_is_not_postgres_is_refused(url):
    with pytest.raises(ConnectError, match="operational_db_url"):
        connector_config(Settings(operational_db_url=url))


def test_the_dimensions_query_reads_every_table_the_connector_captures():
    from lambdarec.postgres import CDC_TABLES
    from schemas.cdc import DIMENSIONS

    assert sorted(d.table for d in DIMENSIONS) == sorted(CDC_TABLES)
