//! The stop request that long core work polls.

use std::fmt;

/// The error text of a fit or a clustering that stopped because its caller asked it to.
pub const CANCELLED: &str = "cancelled";

/// How long work learns that its caller wants it to stop: a poll of a flag, cheap and safe from
/// any thread. Fits and clusterings poll it between iterations, k-means++ rounds and folds;
/// image batches before each batch and each image. The SQL layer passes a read of Postgres's
/// cancel flags and raises the cancel itself, on the backend's thread.
#[derive(Clone, Copy)]
pub struct Interrupt(pub fn() -> bool);

impl Interrupt {
    pub const NEVER: Interrupt = Interrupt(|| false);

    pub fn is_set(&self) -> bool {
        (self.0)()
    }

    /// Err([`CANCELLED`]) when the stop is requested, for the fits' String errors.
    pub fn check(&self) -> Result<(), String> {
        if self.is_set() {
            Err(CANCELLED.into())
        } else {
            Ok(())
        }
    }
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt::NEVER
    }
}

impl fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Interrupt")
    }
}

/// Options compare equal whatever they poll: the poll is not part of what is fitted.
impl PartialEq for Interrupt {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
