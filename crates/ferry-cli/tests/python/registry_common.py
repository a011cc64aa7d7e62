"""What the registry scripts share: producing records serialized by one of confluent-kafka's
serializers to a real topic and reading them back through its deserializer."""

from confluent_kafka import Consumer, Producer
from confluent_kafka.serialization import MessageField, SerializationContext


def round_trip(bootstrap, topic, serializer, deserializer, objects):
    """Produces every object serialized, reads them back; (embedded ids, objects back)."""
    producer = Producer({"bootstrap.servers": bootstrap})
    ids = set()
    for o in objects:
        value = serializer(o, SerializationContext(topic, MessageField.VALUE))
        assert value[0] == 0, "Confluent wire format: magic byte 0"
        ids.add(int.from_bytes(value[1:5], "big"))
        producer.produce(topic, value=value)
    producer.flush(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"registry-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    back = []
    while len(back) < len(objects):
        m = consumer.poll(10)
        assert m is not None, f"{topic}: only {len(back)} of {len(objects)} records came back"
        assert m.error() is None, m.error()
        back.append(deserializer(m.value(), SerializationContext(topic, MessageField.VALUE)))
    consumer.close()
    return sorted(ids), back
