//! Checkpoints in `--state-dir`: per pipeline, its source offsets, watermarks, operator state
//! and view rows, written together so a restart (after `kill -9` too) resumes from one
//! consistent point. A checkpoint is a directory `checkpoint-N` holding `meta.json` and one Arrow
//! IPC file per stateful step (`step-K.arrow`) and for a view (`view.arrow`); it is written as
//! `tmp-N`, synced, and renamed, so a crash leaves the previous one whole. The older ones go.
//!
//! A pipeline's directory is named by its sink and a hash of its query's plan: a changed query
//! starts afresh rather than reading state of another shape.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::plan::Pipeline;

/// What a checkpoint holds besides state batches.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// The source topic and, per partition, the next offset to read.
    pub topic: String,
    pub offsets: BTreeMap<i32, i64>,
    /// Per partition, its watermark; and the pipeline's.
    pub watermarks: BTreeMap<i32, i64>,
    pub watermark: i64,
    /// The same for the table a join reads. (Not `#[serde(flatten)]`ed with the fields above:
    /// serde's flatten reads integer map keys back as strings and fails.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<SourceMeta>,
    /// When it was written (ms since the epoch).
    pub written_ms: i64,
    /// The keyed subtasks whose states it holds (`crate::subtasks`).
    #[serde(default = "one")]
    pub parallelism: usize,
}

fn one() -> usize {
    1
}

/// Where a source table was: its topic and, per partition, the next offset to read and its
/// watermark; and the source's watermark.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceMeta {
    pub topic: String,
    pub offsets: BTreeMap<i32, i64>,
    pub watermarks: BTreeMap<i32, i64>,
    pub watermark: i64,
}

impl Meta {
    pub fn new(first: SourceMeta, joined: Option<SourceMeta>, written_ms: i64, parallelism: usize) -> Meta {
        Meta { topic: first.topic, offsets: first.offsets, watermarks: first.watermarks, watermark: first.watermark, joined, written_ms, parallelism }
    }

    /// Each source's position: the pipeline's source, then the joined table's.
    pub fn sources(&self) -> Vec<SourceMeta> {
        let first = SourceMeta { topic: self.topic.clone(), offsets: self.offsets.clone(), watermarks: self.watermarks.clone(), watermark: self.watermark };
        std::iter::once(first).chain(self.joined.clone()).collect()
    }
}

/// A checkpoint read back.
pub struct Checkpoint {
    pub number: u64,
    pub meta: Meta,
    pub steps: Vec<Option<RecordBatch>>,
    pub view: Option<RecordBatch>,
}

/// A pipeline's checkpoint directory under `state_dir`.
pub fn directory(state_dir: &Path, p: &Pipeline) -> PathBuf {
    // FNV-1a: stable across Rust versions, unlike the standard hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.logical.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let name: String = p.sink.name().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    state_dir.join(format!("{name}-{h:016x}"))
}

fn numbered(dir: &Path, prefix: &str) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix(prefix)).and_then(|n| n.parse().ok()).map(|n| (n, e.path()))).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn write_batch(path: &Path, batch: &RecordBatch) -> Result<(), String> {
    let file = fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut w = arrow::ipc::writer::FileWriter::try_new(&file, &batch.schema()).map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| format!("cannot sync {}: {e}", path.display()))
}

fn read_batch(path: &Path) -> Result<RecordBatch, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| format!("{}: {e}", path.display()))?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| format!("{}: {e}", path.display()))?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())
}

/// Writes checkpoint `number` into `dir` and removes the older ones but the one before it (an
/// exactly-once sink may not have committed `number` when the process dies).
pub fn write(dir: &Path, number: u64, meta: &Meta, steps: &[Option<RecordBatch>], view: Option<&RecordBatch>) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!("tmp-{number}"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    for (k, s) in steps.iter().enumerate() {
        if let Some(batch) = s {
            write_batch(&tmp.join(format!("step-{k}.arrow")), batch)?;
        }
    }
    if let Some(v) = view {
        write_batch(&tmp.join("view.arrow"), v)?;
    }
    let meta_path = tmp.join("meta.json");
    fs::write(&meta_path, serde_json::to_vec_pretty(meta).map_err(|e| e.to_string())?).map_err(|e| format!("cannot write {}: {e}", meta_path.display()))?;
    fs::File::open(&meta_path).and_then(|f| f.sync_all()).map_err(|e| format!("cannot sync {}: {e}", meta_path.display()))?;
    let done = dir.join(format!("checkpoint-{number}"));
    // One of an earlier process whose sink never committed it (exactly once): replaced.
    let _ = fs::remove_dir_all(&done);
    fs::rename(&tmp, &done).map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), done.display()))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    for (n, path) in numbered(dir, "checkpoint-").into_iter().chain(numbered(dir, "tmp-")) {
        if n + 1 < number {
            let _ = fs::remove_dir_all(path);
        }
    }
    Ok(())
}

/// The newest whole checkpoint in `dir`, if any (`steps` gives how many state slots the
/// pipeline has at the checkpoint's parallelism).
pub fn read_latest(dir: &Path, steps: impl Fn(usize) -> Result<usize, String>) -> Result<Option<Checkpoint>, String> {
    match numbered(dir, "checkpoint-").pop() {
        Some((number, _)) => read(dir, number, steps),
        None => Ok(None),
    }
}

/// Checkpoint `number` in `dir`, if it is there.
pub fn read(dir: &Path, number: u64, steps: impl Fn(usize) -> Result<usize, String>) -> Result<Option<Checkpoint>, String> {
    let path = dir.join(format!("checkpoint-{number}"));
    if !path.exists() {
        return Ok(None);
    }
    let meta_path = path.join("meta.json");
    let meta: Meta = serde_json::from_slice(&fs::read(&meta_path).map_err(|e| format!("cannot read {}: {e}", meta_path.display()))?).map_err(|e| format!("{}: {e}", meta_path.display()))?;
    let mut states = Vec::new();
    for k in 0..steps(meta.parallelism)? {
        let file = path.join(format!("step-{k}.arrow"));
        states.push(if file.exists() { Some(read_batch(&file)?) } else { None });
    }
    let view_file = path.join("view.arrow");
    let view = if view_file.exists() { Some(read_batch(&view_file)?) } else { None };
    Ok(Some(Checkpoint { number, meta, steps: states, view }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_reads_back_what_it_wrote() {
        let source = |topic: &str| SourceMeta { topic: topic.into(), offsets: [(0, 5), (3, 7)].into(), watermarks: [(0, 100)].into(), watermark: 100 };
        let meta = Meta::new(source("a"), Some(source("b")), 1, 2);
        let back: Meta = serde_json::from_slice(&serde_json::to_vec(&meta).unwrap()).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.sources(), vec![source("a"), source("b")]);
    }
}
