"""confluent-kafka's own Avro serializer and deserializer against `ferry registry`, through a real
topic: the serializer registers the schema (auto.register.schemas), the record's embedded id is
the registered id, and every object comes back equal. Prints one JSON line with what it saw.

usage: registry_avro.py REGISTRY_URL BOOTSTRAP TOPIC
"""

import json
import sys

import registry_common
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

url, bootstrap, topic = sys.argv[1:4]
SCHEMA = json.dumps({
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "item", "type": "string"},
        {"name": "price", "type": ["null", "double"], "default": None},
    ],
})

client = SchemaRegistryClient({"url": url})
serializer = AvroSerializer(client, SCHEMA)
orders = [{"id": i, "item": f"item-{i}", "price": None if i % 3 == 0 else i * 1.5} for i in range(20)]
ids, back = registry_common.round_trip(bootstrap, topic, serializer, AvroDeserializer(SchemaRegistryClient({"url": url})), orders)
assert back == orders, "objects changed on the way"
latest = client.get_latest_version(f"{topic}-value")

# Schema evolution under the default BACKWARD level, through the client: a field added with a
# default is accepted; a field's type changed incompatibly is refused with 409.
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

evolved = json.loads(SCHEMA)
evolved["fields"].append({"name": "note", "type": "string", "default": ""})
evolved_id = client.register_schema(f"{topic}-value", Schema(json.dumps(evolved), "AVRO"))
broken = json.loads(SCHEMA)
broken["fields"][0]["type"] = "string"
try:
    client.register_schema(f"{topic}-value", Schema(json.dumps(broken), "AVRO"))
    refused = None
except SchemaRegistryError as e:
    refused = e.http_status_code
print(json.dumps({"embedded_ids": ids, "registered_id": latest.schema_id, "version": latest.version, "records": len(back),
                  "evolved_id": evolved_id, "incompatible_status": refused}))
