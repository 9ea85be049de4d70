//! How long to wait before trying again: one backoff for every retry loop (the controller's
//! requeues, the buffered writer's batches).

use std::time::Duration;

/// Exponential backoff from `base`, capped at `cap`, with "equal jitter": `jitter` in [0, 1)
/// places the delay in [d/2, d), so that replicas and CRs spread out while no retry comes
/// sooner than half the nominal delay.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.min(20)));
    let d = exp.min(cap);
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(0, base, cap, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(0, base, cap, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(40, base, cap, 1.0), cap);
    }
}
