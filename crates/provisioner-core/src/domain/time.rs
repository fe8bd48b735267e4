//! Times callers give us: RFC 3339 with an offset, in the future, kept to whole seconds because
//! that is the resolution of a one-time schedule.

use jiff::{SignedDuration, Timestamp};

use crate::domain::names::shown;
use crate::error::Error;

/// How long before a scheduled destroy the schedule can no longer be moved (the spec's guard).
pub const RESCHEDULE_GUARD: SignedDuration = SignedDuration::from_mins(5);

/// Parses `time_to_destroy`: RFC 3339 with an offset, strictly after `now`. Fractions of a
/// second round up, so the cluster never goes earlier than asked.
pub fn parse_future_time(raw: &str, now: Timestamp) -> Result<Timestamp, Error> {
    let refused = || {
        Error::invalid(format!(
            "time_to_destroy {} is not an RFC 3339 time (date, 'T', hours:minutes:seconds, then 'Z' or an offset \
             like +02:00); write it like 2026-11-23T18:00:00Z",
            shown(raw)
        ))
    };
    // The parser accepts more than RFC 3339 (no seconds, hours-only or ±24 offsets): check the shape first.
    if !is_rfc3339_shaped(raw) {
        return Err(refused());
    }
    let parsed: Timestamp = raw.parse().map_err(|_| refused())?;
    let whole = if parsed.subsec_nanosecond() == 0 {
        parsed
    } else {
        Timestamp::from_second(parsed.as_second() + 1).map_err(|_| Error::invalid("time_to_destroy is out of range"))?
    };
    if whole <= now {
        return Err(Error::invalid(format!(
            "time_to_destroy {} is not in the future (now is {}); give a later time",
            shown(raw),
            whole_seconds(now)
        )));
    }
    Ok(whole)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, with `t` and `z` allowed in lower case and the
/// offset within ±23:59, as RFC 3339 section 5.6 writes it. The values of the date and time are
/// left to the parser.
fn is_rfc3339_shaped(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let digits =
        |from: usize, count: usize| bytes.get(from..from + count).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |index: usize, wanted: &[u8]| bytes.get(index).is_some_and(|b| wanted.contains(b));
    let date_and_time = digits(0, 4)
        && at(4, b"-")
        && digits(5, 2)
        && at(7, b"-")
        && digits(8, 2)
        && at(10, b"Tt")
        && digits(11, 2)
        && at(13, b":")
        && digits(14, 2)
        && at(16, b":")
        && digits(17, 2);
    if !date_and_time {
        return false;
    }
    let mut rest = 19;
    if at(rest, b".") {
        let fraction = bytes[rest + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if fraction == 0 {
            return false;
        }
        rest += 1 + fraction;
    }
    match &bytes[rest..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()) => {
            (h1 - b'0') * 10 + (h2 - b'0') <= 23 && (m1 - b'0') * 10 + (m2 - b'0') <= 59
        }
        _ => false,
    }
}

/// Whether a destroy scheduled at `scheduled` can still be moved at `now`: only while now is
/// more than five minutes before it.
pub fn can_reschedule(scheduled: Timestamp, now: Timestamp) -> bool {
    now < scheduled - RESCHEDULE_GUARD
}

/// `now` without its fraction of a second, for messages and records.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> Timestamp {
        raw.parse().unwrap()
    }

    #[test]
    fn accepts_rfc3339_in_the_future_with_any_offset() {
        let now = at("2026-11-23T12:00:00Z");
        assert_eq!(parse_future_time("2026-11-23T13:00:00Z", now).unwrap(), at("2026-11-23T13:00:00Z"));
        assert_eq!(parse_future_time("2026-11-23T15:00:00+02:00", now).unwrap(), at("2026-11-23T13:00:00Z"));
        assert_eq!(parse_future_time("2026-11-23t15:00:00-23:59", now).unwrap(), at("2026-11-24T14:59:00Z"));
        assert_eq!(parse_future_time("2026-11-23T13:00:00z", now).unwrap(), at("2026-11-23T13:00:00Z"));
        assert_eq!(parse_future_time("2026-11-23T13:00:00.5+00:00", now).unwrap(), at("2026-11-23T13:00:01Z"));
    }

    #[test]
    fn rounds_fractions_of_a_second_up() {
        let now = at("2026-11-23T12:00:00Z");
        assert_eq!(parse_future_time("2026-11-23T13:00:00.001Z", now).unwrap(), at("2026-11-23T13:00:01Z"));
    }

    #[test]
    fn rejects_past_present_and_unparsable_times() {
        let now = at("2026-11-23T12:00:00Z");
        for raw in [
            "2026-11-23T12:00:00Z",
            "2026-11-23T11:59:59Z",
            "2020-01-01T00:00:00Z",
            "tomorrow",
            "2026-11-23 13:00",
            "2026-11-23T13:00:00",
            "",
            "2026-11-23T16:17Z",
            "2026-11-23T16:17+01:00",
            "2026-11-23T16:17:00+24:00",
            "2026-11-23T16:17:00-24:00",
            "2026-11-23T16:17:00+05",
            "2026-11-23T16:17:00+0500",
            "2026-11-23T16:17:00+05:60",
            "2026-11-23T16:17:00.Z",
            "2026-11-23T16:17:00ZZ",
            "2026-11-23T16:17:00+05:00:00",
            "+2026-11-23T16:17:00Z",
            "2026-11-23T16:17:00[Europe/Paris]",
            "2026-11-23T16:17:00Z[UTC]",
            "2026-02-30T16:17:00Z",
            "2026-11-23T25:17:00Z",
            "２026-11-23T16:17:00Z",
        ] {
            let error = parse_future_time(raw, now).unwrap_err();
            assert_eq!(error.code(), "InvalidRequest", "{raw}");
        }
    }

    #[test]
    fn the_guard_is_exactly_five_minutes() {
        let scheduled = at("2026-11-23T12:00:00Z");
        assert!(can_reschedule(scheduled, at("2026-11-23T11:54:59Z")), "5:01 before");
        assert!(!can_reschedule(scheduled, at("2026-11-23T11:55:00Z")), "5:00 before");
        assert!(!can_reschedule(scheduled, at("2026-11-23T11:55:01Z")), "4:59 before");
        assert!(!can_reschedule(scheduled, at("2026-11-23T12:30:00Z")), "after");
    }
}
