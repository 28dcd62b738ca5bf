//! Guards the units people type and read.

use super::{Age, format_bytes, format_duration_ms, format_time_ms};

#[test]
fn ages_parse_with_their_unit_and_refuse_the_rest() {
    let age = |s: &str| s.parse::<Age>().map(|a| a.ms);
    assert_eq!(age("7d"), Ok(7 * 86_400_000));
    assert_eq!(age("90m"), Ok(90 * 60_000));
    assert_eq!(age("0s"), Ok(0));
    assert_eq!(age("2w"), Ok(14 * 86_400_000));
    for bad in ["", "7", "d", "7x", "-1d", "1.5h", "99999999999999999999w"] {
        assert!(age(bad).is_err(), "{bad:?}");
    }
    assert_eq!("7d".parse::<Age>().map(|a| a.to_string()), Ok("7d".into()));
}

#[test]
fn timestamps_are_iso_8601_utc() {
    assert_eq!(format_time_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(
        format_time_ms(1_764_054_040_123),
        "2025-11-25T07:00:40.123Z"
    );
    assert_eq!(format_time_ms(-1), "1969-12-31T23:59:59.999Z");
}

#[test]
fn sizes_and_durations_read_naturally() {
    assert_eq!(format_bytes(512), "512 B");
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(5 << 20), "5.0 MiB");
    assert_eq!(format_duration_ms(850), "850ms");
    assert_eq!(format_duration_ms(65_000), "1m 5s");
    assert_eq!(
        format_duration_ms(3 * 86_400_000 + 4 * 3_600_000 + 7),
        "3d 4h"
    );
    assert_eq!(format_duration_ms(86_400_000 + 5_000), "1d");
}
