import pytest, time
from speed.job import run
from tests.integration.test_speed_job import produce
from tests.spark.test_speed_transforms import message
pytestmark = [pytest.mark.integration]
def test_probe(spark, broker_settings):
    produce(broker_settings, [message() for _ in range(3)])
    q = run(spark, broker_settings)
    from lambdarec.lake import Lake
    from schemas.tables import SPEED_PROGRESS
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not Lake(broker_settings).read_arrow(SPEED_PROGRESS).num_rows:
        q.awaitTermination(0.5)
    print("PROBE rows", Lake(broker_settings).read_arrow(SPEED_PROGRESS).to_pylist())
    q.stop()
