//! Runs `examples/two_devices.rs` end to end: both directions through the
//! threaded engine and real HTTP against `examples/server.rs`, offline
//! edits of one note on two devices, the pulled change held behind the
//! device's own edit, and both devices converging. The example returns an
//! error if any step does not hold.

#[expect(
    dead_code,
    reason = "the test calls the example's `run`, not its `main`"
)]
#[path = "../two_devices.rs"]
mod two_devices;

#[test]
fn two_devices_edit_one_note_offline_and_converge()
-> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    two_devices::run(dir.path())
}
