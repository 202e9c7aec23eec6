//! Where each applied limit came from: the prediction, the static defaults (and why), a
//! command-line override, or dry run. Recorded in the `memory_source` / `timeout_source`
//! columns and shown by `run`, `predict`, `stats`, `forecast` and `report`, so that every
//! figure that says "predicted" counts only limits the prediction really set. The sizing
//! engine ([`crate::policy::Sizer`]) decides them; this is how they are reported.

use serde::Serialize;

pub use crate::job::LimitSource;

/// The source of both limits of an attempt, with the reason when it is not the prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitSources {
    pub memory: LimitSource,
    pub timeout: LimitSource,
    /// Why a limit did not come from the prediction (`None` when both did).
    pub reason: Option<String>,
}

impl LimitSources {
    /// True when the memory cap was set by the prediction.
    pub fn memory_predicted(&self) -> bool {
        self.memory == LimitSource::Predicted
    }

    /// One phrase for messages: `memory predicted, timeout static (confidence …)`.
    pub fn describe(&self) -> String {
        let mut s = if self.memory == self.timeout {
            format!("both {}", self.memory)
        } else {
            format!("memory {}, timeout {}", self.memory, self.timeout)
        };
        if let Some(r) = &self.reason {
            s += &format!(": {r}");
        }
        s
    }
}

impl LimitSources {
    /// The sources the sizing engine recorded for an attempt (after any override), with its
    /// reason.
    pub fn from_sizing(s: &crate::policy::Sizing) -> Self {
        LimitSources {
            memory: s.memory_source,
            timeout: s.timeout_source,
            reason: (!s.reason.is_empty()).then(|| s.reason.clone()),
        }
    }
}
