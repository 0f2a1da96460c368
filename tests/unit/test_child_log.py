"""A failed child's error shows the exception and its causes, not a screen of Java stack frames."""

from __future__ import annotations

import sys

import pytest

from lambdarec.processes import StageError, start_child

pytestmark = pytest.mark.unit

JVM_FAILURE = """\
26/12/01 21:48:18 ERROR MicroBatchExecution: Query lambdarec_speed_realtime terminated with error
org.apache.spark.SparkException: Job aborted due to stage failure
\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:1952)
\tat org.apache.spark.scheduler.DAGScheduler.abortStage(DAGScheduler.scala:1939)
Caused by: org.apache.kafka.common.errors.TimeoutException: Topic speed-updates not present in metadata
\tat org.apache.kafka.clients.producer.KafkaProducer.send(KafkaProducer.java:1010)
\t... 31 more
{"event": "failed", "errors": ["Topic speed-updates not present in metadata"]}
"""


def test_a_dead_childs_error_names_the_exception_and_its_cause_without_stack_frames(tmp_path):
    script = f"import sys; sys.stdout.write({JVM_FAILURE!r}); sys.exit(3)"
    child = start_child("speed", [sys.executable, "-c", script], tmp_path)
    child.process.wait(30)
    with pytest.raises(StageError) as error:
        child.check_alive()
    message = str(error.value)
    assert "speed exited with code 3" in message
    assert "Caused by: org.apache.kafka.common.errors.TimeoutException" in message
    assert "SparkException: Job aborted" in message
    assert '"event": "failed"' in message
    assert "\tat " not in message and "more" not in message
    child.stop()
