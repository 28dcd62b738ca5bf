//! Guards the status table both halves follow: every status has one class,
//! a server stores exactly the answers a client will not send again, and
//! the server's key memory outlasts the client's resend window.

use sync_protocol::{
    DEFAULT_KEY_MEMORY, DEFAULT_RESEND_WINDOW, DEFAULT_RESPONSE_TTL, StatusClass, is_storable,
    map_status,
};

#[test]
fn the_documented_rows() {
    let expect = [
        (200, StatusClass::Done),
        (201, StatusClass::Done),
        (204, StatusClass::Done),
        (408, StatusClass::Retry),
        (409, StatusClass::Retry),
        (425, StatusClass::Retry),
        (429, StatusClass::Retry),
        (500, StatusClass::Retry),
        (507, StatusClass::Retry),
        (502, StatusClass::Unavailable),
        (503, StatusClass::Unavailable),
        (504, StatusClass::Unavailable),
        (501, StatusClass::Permanent),
        (505, StatusClass::Permanent),
        (400, StatusClass::Permanent),
        (401, StatusClass::Permanent),
        (403, StatusClass::Permanent),
        (404, StatusClass::Permanent),
        (422, StatusClass::Permanent),
        (301, StatusClass::Permanent),
        (100, StatusClass::Permanent),
    ];
    for (status, class) in expect {
        assert_eq!(map_status(status), class, "status {status}");
    }
}

#[test]
fn a_server_stores_exactly_what_a_client_does_not_resend() {
    for status in 100..=599 {
        let class = map_status(status);
        assert_eq!(
            is_storable(status),
            !class.is_retried() && status < 500,
            "status {status} ({class:?})"
        );
        if class == StatusClass::Done {
            assert!(is_storable(status), "a 2xx is always replayable: {status}");
        }
        assert_eq!(class.counts_attempt(), class != StatusClass::Unavailable);
    }
}

#[test]
fn the_server_remembers_keys_longer_than_the_client_resends_them() {
    assert!(DEFAULT_RESEND_WINDOW < DEFAULT_KEY_MEMORY);
    assert!(DEFAULT_RESPONSE_TTL < DEFAULT_KEY_MEMORY);
    // Room for a day of clock skew between device and server, at least.
    assert!(DEFAULT_RESEND_WINDOW + std::time::Duration::from_secs(86_400) <= DEFAULT_KEY_MEMORY);
}
