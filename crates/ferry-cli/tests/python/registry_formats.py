"""confluent-kafka's own JSON Schema and Protobuf serializers and deserializers against
`ferry registry`, through a real topic each, both with a schema referenced from another subject:
the serializer registers the schema (and, for Protobuf, the imported file), the record's embedded
id is the registered id, every object comes back equal, and evolution is judged through the
client (a compatible change accepted, an incompatible one refused with 409). Prints one JSON line.

usage: registry_formats.py REGISTRY_URL BOOTSTRAP JSON_TOPIC PROTOBUF_TOPIC
"""

import base64
import json
import sys

import registry_common
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

url, bootstrap, json_topic, proto_topic = sys.argv[1:5]
client = SchemaRegistryClient({"url": url})


def round_trip(topic, serializer, deserializer, objects):
    return registry_common.round_trip(bootstrap, topic, serializer, deserializer, objects)


def refused(subject, schema):
    try:
        client.register_schema(subject, schema)
        return None
    except SchemaRegistryError as e:
        return e.http_status_code


# ---- JSON Schema, with an address schema referenced from its own subject ----
address = {"type": "object", "properties": {"street": {"type": "string"}, "zip": {"type": "string"}}}
client.register_schema("address.json", Schema(json.dumps(address), "JSON"))
address_version = client.get_latest_version("address.json").version
customer = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Customer", "type": "object",
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "home": {"$ref": "address.json"}},
    "required": ["id"],
}
references = [SchemaReference("address.json", "address.json", address_version)]
customers = [{"id": i, "name": f"c{i}", "home": {"street": f"{i} Main St", "zip": f"{10000 + i}"}} for i in range(10)]
json_serializer = JSONSerializer(Schema(json.dumps(customer), "JSON", references), client, conf={"auto.register.schemas": True})
json_deserializer = JSONDeserializer(Schema(json.dumps(customer), "JSON", references), schema_registry_client=client)
json_ids, json_back = round_trip(json_topic, json_serializer, json_deserializer, customers)
assert json_back == customers, f"JSON objects changed on the way: {json_back[:2]}"
json_latest = client.get_latest_version(f"{json_topic}-value")
# An open content model: removing a property is compatible, changing a type is not.
smaller = json.loads(json.dumps(customer))
del smaller["properties"]["name"]
json_evolved = client.register_schema(f"{json_topic}-value", Schema(json.dumps(smaller), "JSON", references))
changed = json.loads(json.dumps(customer))
changed["properties"]["id"] = {"type": "string"}
json_refused = refused(f"{json_topic}-value", Schema(json.dumps(changed), "JSON", references))

# ---- Protobuf, with money.proto imported by order.proto (built without protoc) ----
pool = descriptor_pool.DescriptorPool()
F = descriptor_pb2.FieldDescriptorProto
money = descriptor_pb2.FileDescriptorProto(name="money.proto", package="shop", syntax="proto3")
m = money.message_type.add(name="Money")
m.field.add(name="cents", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
m.field.add(name="currency", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
order = descriptor_pb2.FileDescriptorProto(name="order.proto", package="shop", syntax="proto3", dependency=["money.proto"])
o = order.message_type.add(name="Order")
o.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
o.field.add(name="total", number=2, type=F.TYPE_MESSAGE, type_name=".shop.Money", label=F.LABEL_OPTIONAL)
o.field.add(name="skus", number=3, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
pool.Add(money)
pool.Add(order)
Order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))
Money = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Money"))
orders = [Order(id=f"o{i}", total=Money(cents=100 * i, currency="EUR"), skus=[f"s{i}", f"t{i}"]) for i in range(10)]
proto_serializer = ProtobufSerializer(Order, client, {"use.deprecated.format": False})
proto_deserializer = ProtobufDeserializer(Order, {"use.deprecated.format": False})
proto_ids, proto_back = round_trip(proto_topic, proto_serializer, proto_deserializer, orders)
assert proto_back == orders, "Protobuf objects changed on the way"
proto_latest = client.get_latest_version(f"{proto_topic}-value")
assert [r.name for r in proto_latest.schema.references] == ["money.proto"], proto_latest.schema.references
# The stored schema is .proto text; format=serialized gives the compiled file back.
import requests  # noqa: E402  (confluent-kafka's own dependency)
serialized = requests.get(f"{url}/schemas/ids/{proto_latest.schema_id}", params={"format": "serialized"}).json()["schema"]
compiled = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(serialized))
compiled_fields = [(f.name, f.number, f.type_name) for f in compiled.message_type[0].field]
# A field added is compatible; a field's type changed is not (FIELD_SCALAR_KIND_CHANGED).
text = proto_latest.schema.schema_str
proto_evolved = client.register_schema(f"{proto_topic}-value", Schema(text.replace("repeated string skus = 3;", "repeated string skus = 3;\n  string note = 4;"), "PROTOBUF", proto_latest.schema.references))
proto_refused = refused(f"{proto_topic}-value", Schema(text.replace("string id = 1;", "int64 id = 1;"), "PROTOBUF", proto_latest.schema.references))

print(json.dumps({
    "json": {"embedded_ids": json_ids, "registered_id": json_latest.schema_id, "records": len(json_back), "references": [r.name for r in json_latest.schema.references],
             "evolved_id": json_evolved, "incompatible_status": json_refused},
    "protobuf": {"embedded_ids": proto_ids, "registered_id": proto_latest.schema_id, "records": len(proto_back), "schema": text,
                 "compiled_name": compiled.name, "compiled_dependencies": list(compiled.dependency), "compiled_fields": compiled_fields,
                 "evolved_id": proto_evolved, "incompatible_status": proto_refused},
}))
