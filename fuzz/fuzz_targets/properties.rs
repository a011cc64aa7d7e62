//! The MM2 properties file: the Java properties syntax, then the whole configuration (aliases,
//! flows, regex lists, client properties checked by librdkafka). Any text must give a config or
//! errors naming file:line, never a panic; an accepted file's lists compile as they are matched.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(entries) = ferry_mirror::config::properties::parse(text) {
        let lines = text.lines().count().max(1);
        assert!(entries.iter().all(|e| (1..=lines).contains(&e.line)), "an entry names a line outside the file");
    }
    match ferry_mirror::config::MirrorConfig::parse("fuzz.properties", text) {
        Ok(config) => {
            for flow in &config.flows {
                for list in [&flow.topics, &flow.topics_exclude, &flow.groups, &flow.groups_exclude] {
                    // Every accepted entry is usable: the lossy rebuild keeps all of them.
                    let rebuilt = ferry_mirror::config::RegexList::from_patterns_lossy(list.patterns().to_vec());
                    assert_eq!(rebuilt.patterns(), list.patterns());
                }
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "refused without a reason");
            assert!(e.problems.iter().all(|p| p.file == "fuzz.properties"), "a problem does not name the file: {e}");
        }
    }
});
