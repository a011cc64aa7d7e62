//! Ferry's own records as read from Kafka: offset runs, control-topic list changes and metrics
//! reports. Any bytes are applied or refused (and counted), never a panic; a decoded run is
//! valid and encodes back to the same bytes; the lists built from any control log compile.
#![no_main]

use ferry_mirror::control::{ControlLog, FlowLists, ListKind, ListName};
use ferry_mirror::records::RunRecord;
use ferry_mirror::report::MetricsReport;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = "clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = 127.0.0.1:2\na->b.enabled = true\n";

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let (key, value) = rest.split_at(usize::from(split).min(rest.len()));

    if let Ok(r) = RunRecord::decode(key, value) {
        assert!(r.run.len >= 0 && r.run.source >= 0);
        assert_eq!(r.encode_key().unwrap(), key);
        assert_eq!(r.encode_value().unwrap(), value);
    }
    let _ = RunRecord::decode_key(key);
    if let Some(report) = MetricsReport::decode(value) {
        assert_eq!(MetricsReport::decode(&report.encode()), Some(report));
    }

    // A control log fed the record (and its tombstone), then the flow's lists built from it.
    static FLOW: std::sync::OnceLock<ferry_mirror::FlowConfig> = std::sync::OnceLock::new();
    let flow = FLOW.get_or_init(|| ferry_mirror::config::MirrorConfig::parse("f", CONFIG).unwrap().flows.remove(0));
    let mut log = ControlLog::default();
    let applied = log.apply(key, Some(value)).is_some();
    assert!(applied || log.malformed == 1);
    let lists = FlowLists::effective(flow, "f", &log);
    for list in [ListName::Topics, ListName::Groups] {
        for kind in [ListKind::Allow, ListKind::Exclude] {
            assert_eq!(lists.regexes(list, kind).patterns(), lists.active(list, kind).as_slice(), "an applied entry does not compile");
        }
    }
    log.apply(key, None);
});
