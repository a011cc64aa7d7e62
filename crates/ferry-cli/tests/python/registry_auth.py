"""confluent-kafka's SchemaRegistryClient against `ferry registry` with basic auth: the admin's
credentials register, a read-only user reads but is refused a write (403), no or wrong
credentials are refused (401), and a bearer token works. Prints one JSON line.

usage: registry_auth.py REGISTRY_URL
"""

import json
import sys

import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

url = sys.argv[1]


def status(call):
    try:
        call()
        return 200
    except SchemaRegistryError as e:
        return e.http_status_code


admin = SchemaRegistryClient({"url": url, "basic.auth.user.info": "admin:s3cret"})
viewer = SchemaRegistryClient({"url": url, "basic.auth.user.info": "viewer:look"})
stranger = SchemaRegistryClient({"url": url, "basic.auth.user.info": "admin:wrong"})
anonymous = SchemaRegistryClient({"url": url})
schema = Schema('{"type":"record","name":"A","fields":[{"name":"a","type":"int"}]}', "AVRO")
registered = admin.register_schema("auth-value", schema)
print(json.dumps({
    "registered": registered,
    "viewer_reads": viewer.get_latest_version("auth-value").schema_id,
    "viewer_writes": status(lambda: viewer.register_schema("auth2-value", schema)),
    "wrong_password": status(lambda: stranger.get_subjects()),
    "anonymous": status(lambda: anonymous.get_subjects()),
    "bearer": requests.get(f"{url}/subjects", headers={"Authorization": "Bearer t0ken"}).json(),
    "challenge": requests.get(f"{url}/subjects").headers.get("WWW-Authenticate"),
}))
