"""The servers lambdarec runs itself on a laptop: the Kafka broker, Postgres, Kafka Connect with
Debezium, Prometheus and Airflow, each started the way its users start it.
"""
