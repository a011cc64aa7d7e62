//! The Rust Confluent client (`schema_registry_converter`, blocking) against `ferry registry` run
//! in-process over an Apache Kafka broker: an Avro record and a raw Protobuf message registered
//! through the client's subject strategy, encoded, and decoded by a fresh decoder that fetches
//! the schema by id.

use std::sync::Arc;
use std::time::Duration;

use apache_avro::types::Value;
use ferry_registry::config::RegistryConfig;
use ferry_testkit::{free_port, wait_for, Broker};
use schema_registry_converter::blocking::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::blocking::proto_raw::{ProtoRawDecoder, ProtoRawEncoder};
use schema_registry_converter::blocking::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use tokio_util::sync::CancellationToken;

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"}]}"#;
const PROTO: &str = "syntax = \"proto3\";\npackage shop;\n\nmessage Line {\n  string sku = 1;\n  int32 count = 2;\n}\n";

fn supplied(schema_type: SchemaType, schema: &str) -> SuppliedSchema {
    SuppliedSchema::new(None, schema_type, schema.to_string())
}

#[test]
fn schema_registry_converter_round_trips_avro_and_protobuf() {
    let broker = Broker::start("registry-rust-client").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let text = format!("listeners=http://{addr}\nkafkastore.bootstrap.servers={}\nkafkastore.topic.replication.factor=1\n", broker.bootstrap());
    let (config, _) = RegistryConfig::parse("test.properties", &text).unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(ferry_registry::run(config, None, Arc::new(String::new), stop)).map_err(|e| e.to_string())
    });
    wait_for(Duration::from_secs(60), || std::net::TcpStream::connect(&addr).ok().map(|_| ())).expect("the registry did not listen");
    let url = format!("http://{addr}");

    // Avro: the encoder registers the supplied schema under the topic's value subject.
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema("rust-orders".into(), false, supplied(SchemaType::Avro, ORDER));
    let bytes = AvroEncoder::new(SrSettings::new(url.clone())).encode(vec![("id", Value::Long(7)), ("item", Value::String("anchor".into()))], &strategy).unwrap();
    assert_eq!(bytes[0], 0, "Confluent wire format");
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let decoded = AvroDecoder::new(SrSettings::new(url.clone())).decode(Some(&bytes)).unwrap();
    assert_eq!(decoded.value, Value::Record(vec![("id".into(), Value::Long(7)), ("item".into(), Value::String("anchor".into()))]));
    assert_eq!(decoded.name.map(|n| n.fullname(None)), Some("shop.Order".to_string()));

    // Protobuf, raw: the message bytes are the client's; the framing (id, message index) is checked.
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema("rust-lines".into(), false, supplied(SchemaType::Protobuf, PROTO));
    let message = [0x0a, 0x03, b'a', b'b', b'c', 0x10, 0x02]; // sku = "abc", count = 2
    let framed = ProtoRawEncoder::new(SrSettings::new(url.clone())).encode(&message, "shop.Line", &strategy).unwrap();
    let proto_id = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]);
    assert_ne!(proto_id, id, "a second schema, a second id");
    let raw = ProtoRawDecoder::new(SrSettings::new(url.clone())).decode(Some(&framed)).unwrap().expect("a message");
    assert_eq!((raw.bytes.as_slice(), raw.full_name.as_str()), (&message[..], "shop.Line"));
    assert!(raw.schema.schema.contains("message Line"), "the schema as the registry serves it: {}", raw.schema.schema);

    cancel.cancel();
    server.join().unwrap().unwrap();
}
