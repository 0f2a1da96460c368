"""The batch layer: Spark jobs that train, evaluate and publish models from the lake."""
