//! How long each half remembers a key, side by side: the server's memory
//! must outlast the client's resends, or a resend runs twice.

use std::time::Duration;

/// How long a server replays a key's stored response by default
/// (`sync_server::IdempotencyConfig::ttl`): 24 hours.
pub const DEFAULT_RESPONSE_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a server remembers *that* a key was applied by default, after
/// its response has expired (`sync_server::IdempotencyConfig::key_memory`):
/// 30 days. A repeat within it is never run again.
pub const DEFAULT_KEY_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long after an operation's first send a client may still resend it
/// under the same key by default (`sync_outbox::OutboxConfig::resend_window`):
/// 28 days, two days below [`DEFAULT_KEY_MEMORY`] for clock skew between
/// device and server. An operation past it becomes a dead letter for the
/// app to check; one never sent is not affected by age.
pub const DEFAULT_RESEND_WINDOW: Duration = Duration::from_secs(28 * 24 * 3600);
