"""Records in Confluent's Avro wire format for the `ferry sql` avro-confluent test, written and
read by confluent-kafka's own serializer and deserializer against a schema registry.

usage: sql_avro.py produce REGISTRY_URL BOOTSTRAP TOPIC COUNT   (prints nothing; exit 0 when sent)
       sql_avro.py consume REGISTRY_URL BOOTSTRAP TOPIC COUNT   (prints the records as a JSON list,
                                                                  timestamps as epoch milliseconds)
"""

import datetime
import json
import sys

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

mode, url, bootstrap, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
client = SchemaRegistryClient({"url": url})
ctx = SerializationContext(topic, MessageField.VALUE)

if mode == "produce":
    # A writer's schema of its own: a field the table does not have, another order of fields.
    schema = json.dumps({
        "type": "record", "name": "Order", "namespace": "shop",
        "fields": [
            {"name": "note", "type": "string"},
            {"name": "id", "type": "long"},
            {"name": "customer", "type": "string"},
            {"name": "amount", "type": ["null", "long"], "default": None},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    })
    serializer = AvroSerializer(client, schema)
    producer = Producer({"bootstrap.servers": bootstrap})
    base = datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.timezone.utc)
    for i in range(count):
        order = {"note": "n", "id": i, "customer": f"c{i % 5}", "amount": None if i % 10 == 7 else i * 3, "ts": base + datetime.timedelta(milliseconds=100 * i)}
        producer.produce(topic, value=serializer(order, ctx))
    assert producer.flush(30) == 0
elif mode == "consume":
    deserializer = AvroDeserializer(client)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"sql-avro-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out = []
    while len(out) < count:
        m = consumer.poll(10)
        assert m is not None, f"{topic}: only {len(out)} of {count} records"
        assert m.error() is None, m.error()
        record = deserializer(m.value(), ctx)
        for k, v in record.items():
            if isinstance(v, datetime.datetime):
                record[k] = int(v.timestamp() * 1000)
        out.append(record)
    consumer.close()
    print(json.dumps(out))
