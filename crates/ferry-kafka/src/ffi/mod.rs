//! Admin calls librdkafka implements and rust-rdkafka does not wrap: topic ACLs ([`acl`]), a
//! group's committed offsets for every partition ([`group_offsets`]), and the cluster's id, racks
//! and controller ([`cluster`]). This module is the
//! workspace's only `unsafe` code: safe wrappers over librdkafka's C functions, in the style of
//! rust-rdkafka's own admin module. Each call runs on a temporary event queue of an existing
//! admin client and blocks until the result (or the timeout) arrives; every object librdkafka
//! allocates is freed on every path.
#![allow(unsafe_code)]

pub(crate) mod acl;
pub(crate) mod cluster;
pub(crate) mod group_offsets;

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;

/// A string librdkafka owns, copied; None for a null pointer.
///
/// # Safety
/// `p` is null or a NUL-terminated string that lives for the call.
pub(crate) unsafe fn copy_str(p: *const c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

pub(crate) fn c_string(s: &str) -> Result<CString, KafkaError> {
    CString::new(s).map_err(|_| KafkaError::AdminOpCreation(format!("'{s}' contains a NUL byte")))
}

/// What came back from one admin request on a temporary queue.
pub(crate) struct Event {
    queue: *mut rd::rd_kafka_queue_t,
    pub(crate) event: *mut rd::rd_kafka_event_t,
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: both were created by librdkafka for this call and are destroyed once.
        unsafe {
            if !self.event.is_null() {
                rd::rd_kafka_event_destroy(self.event);
            }
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// Runs `start(rk, options, queue)` and waits up to `timeout` for its result event.
///
/// # Safety
/// `rk` is a live client handle for the whole call; `start` only enqueues one admin request.
pub(crate) unsafe fn request(
    rk: *mut rd::rd_kafka_t,
    op: rd::rd_kafka_admin_op_t,
    timeout: Duration,
    start: impl FnOnce(*const rd::rd_kafka_AdminOptions_t, *mut rd::rd_kafka_queue_t),
) -> Result<Event, KafkaError> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    unsafe {
        let options = rd::rd_kafka_AdminOptions_new(rk, op);
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(options, ms, errstr.as_mut_ptr(), errstr.len());
        let queue = rd::rd_kafka_queue_new(rk);
        start(options, queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        // The request times out inside librdkafka at `ms`; a little more here for its answer.
        let event = rd::rd_kafka_queue_poll(queue, ms.saturating_add(2_000));
        let result = Event { queue, event };
        if event.is_null() {
            return Err(KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut));
        }
        let code = rd::rd_kafka_event_error(event);
        if code != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(KafkaError::AdminOp(code.into()));
        }
        Ok(result)
    }
}

