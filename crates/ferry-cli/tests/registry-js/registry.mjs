// The npm @kafkajs/confluent-schema-registry client against `ferry registry`: Avro, JSON Schema
// and Protobuf registered, encoded and decoded (a fresh client decodes, so it fetches the schema
// by id), an Avro evolution accepted and an incompatible one refused. Prints one JSON line.
//
// usage: node registry.mjs REGISTRY_URL
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry'

const url = process.argv[2]
const writer = new SchemaRegistry({ host: url })
const out = {}

async function roundTrip(name, type, schema, subject, value) {
  const { id } = await writer.register({ type, schema }, { subject })
  const encoded = await writer.encode(id, value)
  const reader = new SchemaRegistry({ host: url })
  const decoded = await reader.decode(encoded)
  out[name] = { id, embedded: encoded.readInt32BE(1), magic: encoded[0], decoded: JSON.parse(JSON.stringify(decoded)), latest: await reader.getLatestSchemaId(subject) }
}

const pet = { type: 'record', name: 'Pet', namespace: 'js', fields: [{ name: 'name', type: 'string' }, { name: 'age', type: 'int' }] }
await roundTrip('avro', SchemaType.AVRO, JSON.stringify(pet), 'js-pet-value', { name: 'Rex', age: 3 })
const evolved = { ...pet, fields: [...pet.fields, { name: 'owner', type: 'string', default: '' }] }
out.avro.evolved = (await writer.register({ type: SchemaType.AVRO, schema: JSON.stringify(evolved) }, { subject: 'js-pet-value' })).id
try {
  await writer.register({ type: SchemaType.AVRO, schema: JSON.stringify({ ...pet, fields: [{ name: 'name', type: 'int' }] }) }, { subject: 'js-pet-value' })
  out.avro.incompatible = 'accepted'
} catch (e) {
  out.avro.incompatible = e.status ?? String(e)
}
const json = { type: 'object', properties: { name: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } } }, required: ['name'] }
await roundTrip('json', SchemaType.JSON, JSON.stringify(json), 'js-json-value', { name: 'Rex', tags: ['good'] })
const proto = 'syntax = "proto3";\npackage js;\n\nmessage Pet {\n  string name = 1;\n  int32 age = 2;\n}\n'
await roundTrip('protobuf', SchemaType.PROTOBUF, proto, 'js-proto-value', { name: 'Rex', age: 3 })
console.log(JSON.stringify(out))
