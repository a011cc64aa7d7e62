//! ListConsumerGroupOffsets (KIP-88's OffsetFetch for every partition): all a group has committed,
//! in one request, without naming partitions (OffsetFetch through a consumer needs them, and an
//! empty group says nothing of what it consumed).

use std::ptr;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::KafkaError;

use super::{c_string, copy_str, request};

/// Every (topic, partition, committed offset) of `group`.
pub(crate) fn list_group_offsets(rk: *mut rd::rd_kafka_t, group: &str, timeout: Duration) -> Result<Vec<(String, i32, i64)>, KafkaError> {
    let name = c_string(group)?;
    // SAFETY: `rk` is the caller's live admin client; the request object is freed after it is
    // enqueued (librdkafka copies it); result pointers are read before the event is dropped.
    unsafe {
        let mut one = [rd::rd_kafka_ListConsumerGroupOffsets_new(name.as_ptr(), ptr::null())];
        let outcome = request(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS, timeout, |options, queue| {
            rd::rd_kafka_ListConsumerGroupOffsets(rk, one.as_mut_ptr(), 1, options, queue);
        });
        rd::rd_kafka_ListConsumerGroupOffsets_destroy(one[0]);
        let event = outcome?;
        let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.event);
        if result.is_null() {
            return Err(KafkaError::AdminOpCreation("ListConsumerGroupOffsets returned another event type".into()));
        }
        let mut count = 0usize;
        let groups = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        let mut out = Vec::new();
        for i in 0..count {
            let g = *groups.add(i);
            let error = rd::rd_kafka_group_result_error(g);
            if !error.is_null() {
                let reason = copy_str(rd::rd_kafka_error_string(error)).unwrap_or_default();
                return Err(KafkaError::AdminOpCreation(format!("group '{group}': {reason}")));
            }
            let list = rd::rd_kafka_group_result_partitions(g);
            if list.is_null() {
                continue;
            }
            for j in 0..usize::try_from((*list).cnt).unwrap_or(0) {
                let e = &*(*list).elems.add(j);
                if e.offset >= 0 && e.err == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                    if let Some(topic) = copy_str(e.topic) {
                        out.push((topic, e.partition, e.offset));
                    }
                }
            }
        }
        Ok(out)
    }
}
