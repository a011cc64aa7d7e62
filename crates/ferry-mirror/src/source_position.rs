//! What a partition's replicated position means against the source log when fetching failed
//! (out of range) or stopped: records deleted before they were replicated, a log that lost its
//! end (an unclean leader election), a different log (the topic was recreated), or nothing
//! wrong with the position at all. Pure; the relay reads the log bounds and acts.

/// The decision for one partition; `resume` is where fetching goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceVerdict {
    /// Records below the log start were deleted before they were replicated (retention,
    /// DeleteRecords): `lost` of them. Resume at the log start.
    Truncated { lost: i64, resume: i64 },
    /// The log ends before the position, and it is the same log: its last record is the one
    /// replicated at that offset. An unclean leader election dropped `dropped` records that the
    /// target keeps; the source reuses their offsets for new records. Resume at the new end: the
    /// whole retention is not copied again.
    Rewound { dropped: i64, resume: i64 },
    /// The log ends before the position and is not (or not known to be) the replicated one:
    /// the topic was recreated. Replicate it from its start.
    Replaced { resume: i64 },
    /// The position is inside the log: fetching stopped for another reason. Resume there.
    InRange { resume: i64 },
}

/// `position` is the next source offset to replicate; `low`/`high` the log start and end;
/// `same_log` whether the source's last record equals the copy replicated at its offset
/// (`None`: unknown — not read, not in a replicated run, or an empty log).
pub(crate) fn verdict(position: i64, low: i64, high: i64, same_log: Option<bool>) -> SourceVerdict {
    if position < low {
        SourceVerdict::Truncated { lost: low - position, resume: low }
    } else if position > high {
        match same_log {
            Some(true) => SourceVerdict::Rewound { dropped: position - high, resume: high },
            _ => SourceVerdict::Replaced { resume: low },
        }
    } else {
        SourceVerdict::InRange { resume: position }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_case_resumes_where_no_record_is_lost_or_copied_twice() {
        assert_eq!(verdict(5, 20, 30, None), SourceVerdict::Truncated { lost: 15, resume: 20 });
        // An unclean election cut the log from 100 to 80: records 80.. are new; 80..100 of the
        // old log are on the target already.
        assert_eq!(verdict(100, 0, 80, Some(true)), SourceVerdict::Rewound { dropped: 20, resume: 80 });
        // Recreated (the record at 79 is another one), or unknown: from the start, loudly.
        assert_eq!(verdict(100, 0, 80, Some(false)), SourceVerdict::Replaced { resume: 0 });
        assert_eq!(verdict(100, 0, 80, None), SourceVerdict::Replaced { resume: 0 });
        assert_eq!(verdict(100, 0, 0, None), SourceVerdict::Replaced { resume: 0 });
        assert_eq!(verdict(50, 0, 80, None), SourceVerdict::InRange { resume: 50 });
        assert_eq!(verdict(80, 0, 80, None), SourceVerdict::InRange { resume: 80 }, "at the end is in range");
    }
}
