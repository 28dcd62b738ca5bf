//! Operations that depend on each other: [`Need`], what a later operation
//! takes from an earlier one's kept answer, and how the answer fills it in.
//!
//! The outbox's side (when a dependent may be claimed, the durable rewrite,
//! dead letters) is in `outbox/dependency.rs`.

use serde::{Deserialize, Serialize};

use crate::operation::Operation;

/// What a queued operation needs from an earlier operation's kept answer:
/// the value at `pointer` in that answer replaces every `placeholder` in
/// this operation's target and payload before it is sent.
///
/// The usual case is a temporary id: a note created offline as `tmp-1`,
/// items added to `/notes/tmp-1/items`; the server's answer to the create
/// names the real id, and the items go out with it.
///
/// # The rule
///
/// - The earlier operation must keep its answer
///   ([`Operation::keeping_answer`], or its kind in
///   [`OutboxConfig::keep_answers_of`](crate::OutboxConfig::keep_answers_of)),
///   and must be in the queue when the dependent is enqueued: `enqueue`
///   refuses otherwise, with [`OutboxError::InvalidOperation`](crate::OutboxError::InvalidOperation).
/// - The dependent is not claimed until every operation it needs is `Done`.
///   The claim that finds them `Done` fills it in and stores it, synced,
///   **before** it is handed to a sender, with its `needs` emptied: a crash
///   at any point leaves either the old operation (filled in again, the
///   same way, from the same stored answers) or the filled one.
/// - The value at `pointer` ([RFC 6901](https://www.rfc-editor.org/rfc/rfc6901),
///   `""` for the whole answer) must be a string, a number or a boolean: a
///   string is used as it is, the others as their JSON text. In the target
///   it is percent-encoded (all but `A-Z a-z 0-9 - . _ ~`); in the payload
///   it is escaped as inside a JSON string, so a placeholder written inside
///   a JSON string stays a valid one.
/// - While a needed operation is a dead letter (`Failed`), the dependent
///   **waits**, `Pending`: [`retry_failed`](crate::Outbox::retry_failed) or
///   [`correct`](crate::Outbox::correct) the dependency and both go on.
///   When the needed operation is gone ([`discard`](crate::Outbox::discard)ed),
///   is `Done` without a kept answer (it did not ask, or the answer was
///   longer than [`max_answer_bytes`](crate::OutboxConfig::max_answer_bytes)),
///   or its answer has no usable value at `pointer`, the dependent becomes
///   a dead letter itself, its `last_error` saying which and why; it was
///   never sent.
/// - [`purge_done`](crate::Outbox::purge_done) keeps a `Done` operation
///   that a queued one still needs.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_outbox::{MemoryOutboxStore, Need, Operation, Outbox, OutboxConfig, SendOutcome};
///
/// let outbox = Outbox::new(OutboxConfig::default(), Arc::new(MemoryOutboxStore::new()));
/// let create = outbox.enqueue(
///     Operation::new("note.create", "/notes", r#"{"title":"Groceries"}"#).keeping_answer(),
///     0,
/// )?;
/// let item = outbox.enqueue(
///     Operation::new("item.add", "/notes/tmp-1/items", r#"{"note":"tmp-1","text":"milk"}"#)
///         .needing(Need::new(&create, "/id", "tmp-1")),
///     0,
/// )?;
///
/// // Only the create goes first; the item waits for its answer.
/// let claim = outbox.claim(1, 10)?;
/// assert_eq!(claim.len(), 1);
/// outbox.record(&create, SendOutcome::AcknowledgedWith { version: None, answer: r#"{"id":"n42"}"# }, 2)?;
/// drop(claim);
///
/// let claim = outbox.claim(3, 10)?;
/// let sent = &claim.ops()[0];
/// assert_eq!(sent.id, item);
/// assert_eq!(sent.target, "/notes/n42/items");
/// assert_eq!(sent.payload, r#"{"note":"n42","text":"milk"}"#);
/// # Ok::<_, sync_outbox::OutboxError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Need {
    /// The id of the operation whose answer is needed.
    pub op: String,
    /// Where the value is in that answer, as a JSON pointer (`"/id"`,
    /// `"/note/id"`; `""` for the whole answer).
    pub pointer: String,
    /// The text the value replaces in this operation's target and payload
    /// (the temporary id). Not empty.
    pub placeholder: String,
}

impl Need {
    /// The value at `pointer` in `op`'s answer, in place of `placeholder`.
    pub fn new(
        op: impl Into<String>,
        pointer: impl Into<String>,
        placeholder: impl Into<String>,
    ) -> Self {
        Self {
            op: op.into(),
            pointer: pointer.into(),
            placeholder: placeholder.into(),
        }
    }

    /// Why this need can never be met by `dependent`, if so: an empty
    /// placeholder, a pointer that is not one, a placeholder found in
    /// neither the target nor the payload, or a need of itself.
    pub(crate) fn problem(&self, dependent: &Operation) -> Option<&'static str> {
        if self.placeholder.is_empty() {
            Some("a need's placeholder is empty")
        } else if !(self.pointer.is_empty() || self.pointer.starts_with('/')) {
            Some("a need's pointer is not a JSON pointer (it must be empty or start with `/`)")
        } else if !dependent.target.contains(&self.placeholder)
            && !dependent.payload.contains(&self.placeholder)
        {
            Some("a need's placeholder appears in neither its target nor its payload")
        } else if !dependent.id.is_empty() && self.op == dependent.id {
            Some("it needs its own answer")
        } else {
            None
        }
    }
}

/// Fills `op` in from the kept answers of what it needs (`answers[i]` is
/// the answer of `op.needs[i].op`) and empties its `needs`. `Err` is why it
/// cannot be (for the dead letter's `last_error`); `op` is unchanged then.
pub(crate) fn fill(op: &mut Operation, answers: &[&str]) -> Result<(), String> {
    let mut target = op.target.clone();
    let mut payload = op.payload.clone();
    for (need, answer) in op.needs.iter().zip(answers) {
        let value = value_at(answer, &need.pointer).map_err(|problem| {
            format!(
                "not sent: it needs the value at `{}` of the answer of {}, which {problem}",
                need.pointer, need.op
            )
        })?;
        target = target.replace(&need.placeholder, &percent_encode(&value));
        payload = payload.replace(&need.placeholder, &json_escape(&value));
    }
    op.target = target;
    op.payload = payload;
    op.needs.clear();
    Ok(())
}

/// The text of the value at `pointer` in the JSON `answer`.
fn value_at(answer: &str, pointer: &str) -> Result<String, &'static str> {
    let json: serde_json::Value = serde_json::from_str(answer).map_err(|_| "is not JSON")?;
    match json.pointer(pointer) {
        None => Err("has no value there"),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err("is null, an array or an object there, not a string or a number"),
    }
}

/// `value` with every byte but RFC 3986's unreserved ones percent-encoded.
fn percent_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
    out
}

/// `value` escaped as the inside of a JSON string.
fn json_escape(value: &str) -> String {
    let quoted = serde_json::Value::String(value.to_owned()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dependent(target: &str, payload: &str) -> Operation {
        Operation::new("item.add", target, payload).needing(Need::new("op_1", "/id", "tmp-1"))
    }

    #[test]
    fn a_string_fills_target_and_payload_escaped_for_each() {
        let mut op = dependent("/notes/tmp-1/items", r#"{"note":"tmp-1"}"#);
        fill(&mut op, &[r#"{"id":"a b\"c"}"#]).expect("fills");
        assert_eq!(op.target, "/notes/a%20b%22c/items");
        assert_eq!(op.payload, r#"{"note":"a b\"c"}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&op.payload).is_ok());
        assert!(op.needs.is_empty());
    }

    #[test]
    fn a_number_is_its_json_text_and_nested_pointers_work() {
        let mut op = dependent("/notes/tmp-1", "{}");
        fill(&mut op, &[r#"{"note":{"id":42}}"#]).expect_err("no /id");
        assert_eq!(op.target, "/notes/tmp-1", "unchanged on error");
        op.needs[0].pointer = "/note/id".into();
        fill(&mut op, &[r#"{"note":{"id":42}}"#]).expect("fills");
        assert_eq!(op.target, "/notes/42");
    }

    #[test]
    fn unusable_answers_say_why() {
        for (answer, why) in [
            ("not json", "is not JSON"),
            (r#"{"id":null}"#, "null"),
            (r#"{"id":[1]}"#, "an array"),
            (r#"{"other":1}"#, "no value there"),
        ] {
            let mut op = dependent("/notes/tmp-1", "{}");
            let error = fill(&mut op, &[answer]).expect_err(answer);
            assert!(error.contains(why) && error.contains("op_1"), "{error}");
        }
    }

    #[test]
    fn needs_that_can_never_be_met_are_named() {
        let op = Operation::new("item.add", "/notes/tmp-1", "{}");
        assert!(Need::new("a", "/id", "").problem(&op).is_some());
        assert!(Need::new("a", "id", "tmp-1").problem(&op).is_some());
        assert!(Need::new("a", "/id", "tmp-2").problem(&op).is_some());
        assert_eq!(Need::new("a", "/id", "tmp-1").problem(&op), None);
        assert_eq!(Need::new("a", "", "tmp-1").problem(&op), None);
    }
}
