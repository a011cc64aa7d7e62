//! A pipeline's operators spread over threads, as Flink spreads a job over subtasks.
//!
//! The steps split in three (pure decision: [`Stages::of`]):
//! - the **stateless prefix** (filters, projections, window assignment) runs on each chunk of
//!   rows a source lane read, in parallel;
//! - the **keyed stage**, from the first stateful step (an aggregate, a Top-N, an upsert
//!   table's changelog) up to the next one, runs in `parallelism` subtasks: each row goes to the
//!   subtask its key's hash names, so each subtask holds the state of its keys only;
//! - the **tail** (what follows: a second aggregate grouped otherwise, and a join, which reads
//!   two tables) runs on one thread over the subtasks' results, as Flink runs a global
//!   aggregate in one subtask.
//!
//! A key's hash is FNV-1a over its text (each column cast to a string), so a checkpoint's
//! subtask states stay valid across versions of Ferry and of Arrow; a checkpoint records its
//! parallelism, and a restart resumes with it (a keyed state cannot be re-partitioned yet).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, Int8Array, RecordBatch, UInt32Array};
use arrow::datatypes::DataType;
use datafusion_physical_expr::PhysicalExpr;

use crate::ops::{evaluate, Operators, Rows, Step};

/// What identifies a row's key for the keyed stage.
enum Key<'a> {
    Exprs(Vec<&'a Arc<dyn PhysicalExpr>>),
    Columns(&'a [usize]),
}

/// Where a pipeline's steps split: `steps[..prefix]` is stateless, `steps[prefix..keyed]` is
/// partitioned by key, the rest runs on one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stages {
    pub prefix: usize,
    pub keyed: usize,
}

impl Stages {
    pub fn of(steps: &[Step]) -> Stages {
        let stateful = |s: &Step| matches!(s, Step::Aggregate(_) | Step::Rank(_) | Step::Changelog(_) | Step::Join(_));
        let Some(first) = steps.iter().position(stateful) else {
            return Stages { prefix: steps.len(), keyed: steps.len() };
        };
        if key(&steps[first]).is_none() {
            // A join (two inputs) or a step without a key (a global aggregate): one thread.
            return Stages { prefix: first, keyed: first };
        }
        let keyed = steps.iter().skip(first + 1).position(stateful).map_or(steps.len(), |n| first + 1 + n);
        Stages { prefix: first, keyed }
    }
}

/// The key that partitions a stateful step's input, `None` when it has none.
fn key(step: &Step) -> Option<Key<'_>> {
    let key = match step {
        Step::Aggregate(a) => {
            // A window's bounds are not part of the key: a SESSION merges its windows per key.
            let window = a.window.map_or(vec![], |(s, e)| vec![s, e]);
            Key::Exprs(a.keys.iter().enumerate().filter(|(i, _)| !window.contains(i)).map(|(_, k)| k).collect())
        }
        Step::Rank(r) => Key::Exprs(r.partition.iter().collect()),
        Step::Changelog(c) => Key::Columns(&c.key),
        _ => return None,
    };
    let empty = match &key {
        Key::Exprs(e) => e.is_empty(),
        Key::Columns(c) => c.is_empty(),
    };
    (!empty).then_some(key)
}

/// Each row's subtask: FNV-1a over the key columns' text, modulo `n`.
pub fn partition(keys: &[ArrayRef], rows: usize, n: usize) -> Result<Vec<u32>, String> {
    let mut hashes = vec![0xcbf2_9ce4_8422_2325_u64; rows];
    let fnv = |h: &mut u64, bytes: &[u8]| {
        for b in bytes {
            *h = (*h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for column in keys {
        let text = match column.data_type() {
            DataType::Utf8 => column.clone(),
            t => arrow::compute::cast(column, &DataType::Utf8).map_err(|e| format!("a key of type {t} cannot be partitioned: {e}"))?,
        };
        let text = text.as_string::<i32>();
        for (i, h) in hashes.iter_mut().enumerate() {
            if text.is_null(i) {
                fnv(h, &[0]);
            } else {
                fnv(h, &[1]);
                fnv(h, text.value(i).as_bytes());
                fnv(h, &[0xff]);
            }
        }
    }
    Ok(hashes.into_iter().map(|h| (h % n as u64) as u32).collect())
}

/// Rows of one schema as one (at least one part: it gives the schema).
pub fn concat(mut parts: Vec<Rows>) -> Result<Rows, String> {
    match parts.len() {
        0 => return Err("no rows to concatenate".into()),
        1 => return Ok(parts.pop().expect("one part")),
        _ => {}
    }
    let schema = parts[0].batch.schema();
    let batch = arrow::compute::concat_batches(&schema, parts.iter().map(|p| &p.batch)).map_err(|e| e.to_string())?;
    let kinds = parts.iter().any(|p| p.kinds.is_some()).then(|| Int8Array::from_iter_values(parts.iter().flat_map(|p| (0..p.num_rows()).map(|r| p.kind(r) as i8))));
    let watermarks = parts.iter().any(|p| p.watermarks.is_some()).then(|| Int64Array::from_iter_values(parts.iter().flat_map(|p| (0..p.num_rows()).map(|r| p.watermarks.as_ref().map_or(i64::MIN, |w| w.value(r))))));
    Ok(Rows { batch, kinds, watermarks })
}

/// Runs `f` on every item, each on its own thread when there are several.
pub(crate) fn parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.into_iter().map(|item| scope.spawn(move || f(item))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// A pipeline's operators over its subtasks.
pub struct Subtasks<'a> {
    steps: &'a [Step],
    stages: Stages,
    /// What partitions the keyed stage's rows (its first step's key).
    key: Option<Key<'a>>,
    /// The prefix's operators, one per chunk of a round (stateless: they only count late rows).
    lanes: Vec<Operators<'a>>,
    keyed: Vec<Operators<'a>>,
    tail: Operators<'a>,
}

impl<'a> Subtasks<'a> {
    /// `parallelism` subtasks for the keyed stage (one when the steps have none).
    pub fn new(steps: &'a [Step], parallelism: usize) -> Result<Subtasks<'a>, String> {
        let stages = Stages::of(steps);
        let n = if stages.keyed > stages.prefix { parallelism.max(1) } else { 0 };
        let keyed = (0..n).map(|_| Operators::new(&steps[stages.prefix..stages.keyed])).collect::<Result<_, _>>()?;
        let key = steps.get(stages.prefix).filter(|_| n > 0).and_then(key);
        Ok(Subtasks { steps, stages, key, lanes: Vec::new(), keyed, tail: Operators::new(&steps[stages.keyed..])? })
    }

    /// How many keyed subtasks run (1 when the pipeline has no keyed stage).
    pub fn parallelism(&self) -> usize {
        self.keyed.len().max(1)
    }

    /// The state slots a checkpoint of these steps holds with `parallelism` subtasks.
    pub fn slots_for(steps: &[Step], parallelism: usize) -> Result<usize, String> {
        Ok(Subtasks::new(steps, parallelism)?.slots())
    }

    fn all(&self) -> impl Iterator<Item = &Operators<'a>> {
        self.lanes.iter().chain(&self.keyed).chain(std::iter::once(&self.tail))
    }

    /// Rows dropped because every window they belong to had fired.
    pub fn late(&self) -> u64 {
        self.all().map(|o| o.late).sum()
    }

    pub fn state_rows(&self) -> usize {
        self.all().map(Operators::state_rows).sum()
    }

    pub fn expired(&self) -> u64 {
        self.all().map(Operators::expired).sum()
    }

    /// The prefix's steps (stateless: a slot each), each subtask's, then the tail's.
    pub fn slots(&self) -> usize {
        self.stages.prefix + self.keyed.iter().map(Operators::slots).sum::<usize>() + self.tail.slots()
    }

    pub fn snapshot(&mut self) -> Result<Vec<Option<RecordBatch>>, String> {
        let mut out = vec![None; self.stages.prefix];
        for k in &mut self.keyed {
            out.extend(k.snapshot()?);
        }
        out.extend(self.tail.snapshot()?);
        Ok(out)
    }

    pub fn restore(&mut self, states: Vec<Option<RecordBatch>>) -> Result<(), String> {
        if states.len() != self.slots() {
            return Err(format!("the checkpoint has {} steps, the query {}", states.len(), self.slots()));
        }
        let mut states = states.into_iter().skip(self.stages.prefix);
        for k in &mut self.keyed {
            k.restore(states.by_ref().take(k.slots()).collect())?;
        }
        self.tail.restore(states.collect())
    }

    /// Runs the chunks a source read (side 0: the pipeline's source; 1: a join's other table)
    /// through the steps under each source's watermark: the prefix on each chunk and the
    /// keyed stage on each subtask in parallel, then the tail.
    /// `chunks` holds one at least (empty when nothing was read: the watermark moved).
    pub fn process_side(&mut self, side: usize, chunks: Vec<Rows>, watermarks: [i64; 2]) -> Result<Rows, String> {
        if self.stages.prefix == 0 && self.keyed.is_empty() {
            // A join, or a step without a key first: all on this thread.
            return self.tail.process_side(side, concat(chunks)?, watermarks);
        }
        if side != 0 {
            return Err("rows of a second source without a join".into());
        }
        let watermark = watermarks[0];
        let prefix = &self.steps[..self.stages.prefix];
        while self.lanes.len() < chunks.len() {
            self.lanes.push(Operators::new(prefix)?);
        }
        let n = self.keyed.len();
        let key = self.key.as_ref();
        let work: Vec<_> = self.lanes.iter_mut().zip(chunks).collect();
        let split = parallel(work, |(lane, rows)| -> Result<Vec<Rows>, String> {
            let rows = lane.process(rows, watermark)?;
            match key {
                Some(key) if n > 1 => {
                    let columns = match key {
                        Key::Exprs(exprs) => exprs.iter().map(|e| evaluate(e, &rows.batch)).collect::<Result<Vec<_>, _>>()?,
                        Key::Columns(c) => c.iter().map(|i| rows.batch.column(*i).clone()).collect(),
                    };
                    let to = partition(&columns, rows.num_rows(), n)?;
                    (0..n as u32).map(|s| rows.take(&UInt32Array::from_iter_values((0..to.len() as u32).filter(|r| to[*r as usize] == s)))).collect()
                }
                _ => Ok(vec![rows]),
            }
        });
        let split = split.into_iter().collect::<Result<Vec<_>, _>>()?;
        let rows = if n == 0 {
            concat(split.into_iter().flatten().collect())?
        } else {
            let mut inputs: Vec<Vec<Rows>> = (0..n).map(|_| Vec::new()).collect();
            for parts in split {
                for (s, part) in parts.into_iter().enumerate() {
                    inputs[s].push(part);
                }
            }
            let work: Vec<_> = self.keyed.iter_mut().zip(inputs).collect();
            let outputs = parallel(work, |(subtask, inputs)| subtask.process(concat(inputs)?, watermark));
            concat(outputs.into_iter().collect::<Result<Vec<_>, _>>()?)?
        };
        if self.stages.keyed == self.steps.len() {
            return Ok(rows);
        }
        self.tail.process(rows, watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    #[test]
    fn a_key_goes_to_one_subtask_whatever_its_type_and_the_hash_is_stable() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None, Some(7), Some(42)]));
        let texts: ArrayRef = Arc::new(StringArray::from(vec![Some("7"), None, Some("7"), Some("42")]));
        let a = partition(std::slice::from_ref(&ints), 4, 4).unwrap();
        assert_eq!(a[0], a[2]);
        // The text of a value decides: 7 and "7" go to the same subtask.
        assert_eq!(a, partition(&[texts], 4, 4).unwrap());
        // FNV-1a of [1, '7', 0xff] modulo 4, computed by hand once: stable across releases.
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for b in [1u8, b'7', 0xff] {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(a[0] as u64, h % 4);
        // Two columns: (7, NULL) and (NULL, 7) differ.
        let left: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None]));
        let right: ArrayRef = Arc::new(Int64Array::from(vec![None, Some(7)]));
        let many = partition(&[left, right], 2, 1 << 20).unwrap();
        assert_ne!(many[0], many[1]);
    }

    #[test]
    fn rows_concatenate_with_their_kinds_and_watermarks() {
        let batch = |v: Vec<i64>| RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(v)) as ArrayRef)]).unwrap();
        let plain = Rows::new(batch(vec![1, 2]));
        let changes = Rows { batch: batch(vec![3]), kinds: Some(Int8Array::from(vec![3])), watermarks: Some(Int64Array::from(vec![9])) };
        let all = concat(vec![plain, changes]).unwrap();
        assert_eq!(all.text(), vec!["+I 1", "+I 2", "-D 3"]);
        assert_eq!(all.watermarks.unwrap().values().to_vec(), vec![i64::MIN, i64::MIN, 9]);
    }

    const TABLES: &str = "CREATE TABLE bids (item STRING, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'format' = 'json');\n";

    /// The rows left once every change is applied (a multiset, as text).
    fn fold(changes: &[Rows]) -> Vec<String> {
        let mut table: Vec<String> = Vec::new();
        for rows in changes {
            for line in rows.text() {
                let (kind, row) = line.split_at(3);
                if kind.starts_with('+') {
                    table.push(row.to_string());
                } else {
                    let at = table.iter().position(|r| r == row).unwrap_or_else(|| panic!("{line} takes back a row never added"));
                    table.remove(at);
                }
            }
        }
        table.sort();
        table
    }

    #[test]
    fn subtasks_give_what_one_thread_gives() {
        let sink = |columns: &str, key: &str| format!("CREATE TABLE results ({columns}, PRIMARY KEY ({key}) NOT ENFORCED) WITH ('connector' = 'upsert-kafka', 'topic' = 'out', 'properties.bootstrap.servers' = '127.0.0.1:9092', 'key.format' = 'json', 'value.format' = 'json');\n");
        let queries = [
            // A window aggregate keyed by item (the filter runs in the lanes).
            format!("{}INSERT INTO results SELECT item, window_start, COUNT(*), SUM(price) FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) WHERE price > 3 GROUP BY item, window_start, window_end;", sink("item STRING, ws TIMESTAMP(3), n BIGINT, total BIGINT", "item, ws")),
            // An updating aggregate, then one grouped otherwise (the tail, on one thread).
            format!("{}INSERT INTO results SELECT n, COUNT(*) FROM (SELECT item, COUNT(*) AS n FROM bids GROUP BY item) GROUP BY n;", sink("n BIGINT, items BIGINT", "n")),
            // Top-2 per item.
            format!("{}INSERT INTO results SELECT item, price, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY item ORDER BY price DESC) AS r FROM bids) WHERE r <= 2;", sink("item STRING, price BIGINT, ts TIMESTAMP(3)", "item, price")),
            // A global aggregate: no key, one subtask.
            format!("{}INSERT INTO results SELECT COUNT(*) FROM bids;", sink("n BIGINT", "n")),
        ];
        // 600 bids of 37 items over 60 s, in rounds of 3 chunks; some arrive late.
        let mut seed = 7_u64;
        let mut random = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut rounds: Vec<Vec<(String, i64, i64)>> = Vec::new();
        for r in 0..40 {
            rounds.push((0..15).map(|_| (format!("item{}", random(37)), random(10) as i64, (r * 1500 + random(4000) as i64).max(0))).collect());
        }
        for sql in queries {
            let job = crate::plan::plan_script(&format!("{TABLES}{sql}")).unwrap();
            let p = &job.pipelines[0];
            let schema = crate::format::nullable_like(&p.source.schema);
            let chunk = |data: &[(String, i64, i64)], watermark: i64| Rows {
                batch: RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from(data.iter().map(|d| d.0.as_str()).collect::<Vec<_>>())),
                        Arc::new(Int64Array::from(data.iter().map(|d| d.1).collect::<Vec<_>>())),
                        Arc::new(arrow::array::TimestampMillisecondArray::from(data.iter().map(|d| d.2).collect::<Vec<_>>())),
                    ],
                )
                .unwrap(),
                kinds: None,
                watermarks: Some(Int64Array::from(vec![watermark; data.len()])),
            };
            let mut one = Operators::new(&p.steps).unwrap();
            let mut three = Subtasks::new(&p.steps, 3).unwrap();
            assert_eq!(three.parallelism(), if sql.contains("COUNT(*) FROM bids;") { 1 } else { 3 }, "{sql}");
            let (mut expected, mut got) = (Vec::new(), Vec::new());
            for (r, data) in rounds.iter().enumerate() {
                let watermark = r as i64 * 1500 - 3000;
                expected.push(one.process(chunk(data, watermark), watermark).unwrap());
                let chunks = data.chunks(5).map(|c| chunk(c, watermark)).collect();
                got.push(three.process_side(0, chunks, [watermark; 2]).unwrap());
                if r == 20 {
                    // Through a checkpoint, mid-stream.
                    let state = three.snapshot().unwrap();
                    three = Subtasks::new(&p.steps, 3).unwrap();
                    three.restore(state).unwrap();
                }
            }
            expected.push(one.process(chunk(&[], i64::MAX), i64::MAX).unwrap());
            got.push(three.process_side(0, vec![chunk(&[], i64::MAX)], [i64::MAX; 2]).unwrap());
            assert!(!fold(&expected).is_empty(), "{sql}");
            assert_eq!(fold(&got), fold(&expected), "{sql}");
            assert_eq!(three.late(), one.late, "{sql}");
        }
    }
}
