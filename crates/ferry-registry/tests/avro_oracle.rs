//! Ferry's Avro compatibility against Apache Avro's own Java `SchemaCompatibility` (from Maven
//! Central, beside Kafka's jars): every ordered pair of a corpus, reader reading what writer
//! wrote, must get the same verdict. The corpus covers primitives and promotions, unions,
//! arrays, maps, fixed, enums with and without defaults, records with added, removed, aliased and
//! defaulted fields, namespaces, record aliases, nested and recursive types, logical types.

use std::path::PathBuf;

use ferry_registry::avro::{can_read, Schema};

#[test]
fn every_pair_of_the_corpus_gets_javas_verdict() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    let corpus = dir.join("avro/corpus.jsonl");
    let text = std::fs::read_to_string(&corpus).unwrap();
    let schemas: Vec<Schema> = text.lines().map(|l| Schema::parse(l, &[]).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    let classes = ferry_testkit::compile_java(&dir.join("java/AvroOracle.java")).expect("javac with Kafka's jars and Apache Avro (scripts/install-kafka)");
    let java = ferry_testkit::java_program(&classes, "AvroOracle", &[corpus.to_str().unwrap()]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut checked = 0;
    let mut disagree = Vec::new();
    for verdict in java.lines() {
        let parts: Vec<&str> = verdict.split(' ').collect();
        let (r, w): (usize, usize) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
        let java_ok = parts[2] == "COMPATIBLE";
        let ours = can_read(&schemas[r], &schemas[w]);
        if ours.is_empty() != java_ok {
            disagree.push(format!("reader {} / writer {}: Java {}, Ferry {:?}", lines[r], lines[w], parts[2], ours));
        }
        checked += 1;
    }
    assert_eq!(checked, schemas.len() * schemas.len(), "Java answered every pair");
    println!("{checked} reader/writer pairs, {} schemas: Ferry agrees with Apache Avro's Java SchemaCompatibility on {} of them", schemas.len(), checked - disagree.len());
    assert!(disagree.is_empty(), "{} disagreements:\n{}", disagree.len(), disagree.join("\n"));
}
