//! ListConsumerGroupOffsets (KIP-88's OffsetFetch for every partition): all a group has committed,
//! in one request, without naming partitions (OffsetFetch through a consumer needs them, and an
//! empty group says nothing of what it consumed).

use std::ffi::CString;
use std::os::raw::c_char;
use std::ptr;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{c_string, copy_str};

/// Every (topic, partition, committed offset) of `group`.
pub(crate) fn list_group_offsets(rk: *mut rd::rd_kafka_t, group: &str, timeout: Duration) -> Result<Vec<(String, i32, i64)>, KafkaError> {
    let mut all = list_many(rk, &[group.to_string()], timeout)?;
    match all.pop() {
        Some((_, Ok(offsets))) => Ok(offsets),
        Some((_, Err(reason))) => Err(KafkaError::AdminOpCreation(format!("group '{group}': {reason}"))),
        None => Err(KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut)),
    }
}

/// One group's answer: its committed offsets, or why they could not be read.
pub(crate) type GroupOffsets = (String, Result<Vec<(String, i32, i64)>, String>);

/// The committed offsets of many groups: one request per group (librdkafka takes one group per
/// call), all in flight together on one queue, so the whole list costs about one round trip to
/// each coordinator rather than one per group. A group whose answer did not come within
/// `timeout` is missing from the result.
pub(crate) fn list_many(rk: *mut rd::rd_kafka_t, groups: &[String], timeout: Duration) -> Result<Vec<GroupOffsets>, KafkaError> {
    let names: Vec<CString> = groups.iter().map(|g| c_string(g)).collect::<Result<_, _>>()?;
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut out = Vec::with_capacity(groups.len());
    // SAFETY: `rk` is the caller's live admin client. Each request object is freed once it is
    // enqueued (librdkafka copies it); the options and the queue are freed on every path below;
    // every event is destroyed after its results are copied out.
    unsafe {
        let options = rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(options, ms, errstr.as_mut_ptr(), errstr.len());
        let queue = rd::rd_kafka_queue_new(rk);
        for name in &names {
            let mut one = [rd::rd_kafka_ListConsumerGroupOffsets_new(name.as_ptr(), ptr::null())];
            rd::rd_kafka_ListConsumerGroupOffsets(rk, one.as_mut_ptr(), 1, options, queue);
            rd::rd_kafka_ListConsumerGroupOffsets_destroy(one[0]);
        }
        rd::rd_kafka_AdminOptions_destroy(options);
        let deadline = Instant::now() + timeout + Duration::from_secs(2);
        while out.len() < names.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let event = rd::rd_kafka_queue_poll(queue, i32::try_from(left.as_millis()).unwrap_or(i32::MAX));
            if event.is_null() {
                break;
            }
            out.extend(read_event(event));
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
    }
    Ok(out)
}

/// The groups of one ListConsumerGroupOffsets result event.
///
/// # Safety
/// `event` is a live event of that admin operation.
unsafe fn read_event(event: *mut rd::rd_kafka_event_t) -> Vec<GroupOffsets> {
    let mut out = Vec::new();
    unsafe {
        let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event);
        if result.is_null() {
            return out;
        }
        let mut count = 0usize;
        let groups = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        for i in 0..count {
            let g = *groups.add(i);
            let name = copy_str(rd::rd_kafka_group_result_name(g)).unwrap_or_default();
            let error = rd::rd_kafka_group_result_error(g);
            if !error.is_null() {
                out.push((name, Err(copy_str(rd::rd_kafka_error_string(error)).unwrap_or_default())));
                continue;
            }
            let mut offsets = Vec::new();
            let list = rd::rd_kafka_group_result_partitions(g);
            if !list.is_null() {
                for j in 0..usize::try_from((*list).cnt).unwrap_or(0) {
                    let e = &*(*list).elems.add(j);
                    if e.offset >= 0 && e.err == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                        if let Some(topic) = copy_str(e.topic) {
                            offsets.push((topic, e.partition, e.offset));
                        }
                    }
                }
            }
            out.push((name, Ok(offsets)));
        }
    }
    out
}
