//! The outbox's side of operations that need an earlier one's answer
//! ([`Need`](crate::Need)): refusing needs that can never be met at
//! enqueue, and deciding at claim whether a dependent waits, is filled in,
//! or becomes a dead letter.

use super::Outbox;
use super::index::State;
use crate::dependency::fill;
use crate::error::OutboxError;
use crate::operation::{Operation, OperationStatus};

/// Where a dependent operation's needs stand.
pub(super) enum Needs {
    /// Every needed operation is `Done` with its answer: the operation
    /// filled in from them, its `needs` empty (not stored yet).
    Ready(Box<Operation>),
    /// A needed operation is not `Done` yet (pending, in flight, or a dead
    /// letter that may still be retried).
    Waiting,
    /// It can never be filled in: why, for its `last_error`.
    Broken(String),
}

impl Outbox {
    /// Refuses, before anything is stored, a need that can never be met:
    /// see [`Need::problem`](crate::Need), a needed operation that is not
    /// in the queue, or one that does not keep its answer. An operation
    /// being enqueued right now (in an open store transaction, the usual
    /// case for a create and its items) counts as in the queue.
    pub(super) fn refuse_unmeetable_needs(
        &self,
        state: &State,
        op: &Operation,
    ) -> Result<(), OutboxError> {
        let invalid = |problem| OutboxError::InvalidOperation {
            id: op.id.clone(),
            kind: op.kind.clone(),
            problem,
        };
        for need in &op.needs {
            if let Some(problem) = need.problem(op) {
                return Err(invalid(problem));
            }
            if state.enqueuing.contains_key(&need.op) {
                continue;
            }
            match self.store.get(&need.op)? {
                None => return Err(invalid("it needs an operation that is not in the queue")),
                Some(dependency) if !dependency.keep_answer => {
                    return Err(invalid(
                        "it needs an operation that does not keep its answer \
                         (enqueue that one with `keeping_answer`)",
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Where `op`'s needs stand (see [`Need`](crate::Need) for the rule).
    pub(super) fn resolve_needs(&self, op: &Operation) -> Result<Needs, OutboxError> {
        let mut answers = Vec::with_capacity(op.needs.len());
        for need in &op.needs {
            let Some(dependency) = self.store.get(&need.op)? else {
                return Ok(Needs::Broken(format!(
                    "not sent: it needs the answer of {}, which is no longer in the queue \
                     (discarded)",
                    need.op
                )));
            };
            if dependency.status != OperationStatus::Done {
                return Ok(Needs::Waiting);
            }
            let Some(answer) = dependency.answer else {
                let why = if dependency.last_error.is_empty() {
                    "it did not ask to keep it".to_owned()
                } else {
                    dependency.last_error
                };
                return Ok(Needs::Broken(format!(
                    "not sent: it needs the answer of {}, which was not kept: {why}",
                    need.op
                )));
            };
            answers.push(answer);
        }
        let mut filled = op.clone();
        let answers: Vec<&str> = answers.iter().map(String::as_str).collect();
        Ok(match fill(&mut filled, &answers) {
            Ok(()) => Needs::Ready(Box::new(filled)),
            Err(why) => Needs::Broken(why),
        })
    }

    /// Whether `op` waits for an operation it needs (not claimable yet):
    /// one of them is still there and not `Done`. Only the statuses are
    /// read; filling it in is the claim's work.
    pub(super) fn waits_for_needs(&self, op: &Operation) -> Result<bool, OutboxError> {
        for need in &op.needs {
            if let Some(dependency) = self.store.get(&need.op)?
                && dependency.status != OperationStatus::Done
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests;
