//! When a repeated discovery failure deserves a log line.
//!
//! A dead seed fails once per refresh interval, forever; logging each one
//! would bury everything else. The first failure of a streak is logged, then
//! one reminder every [`REMINDER_EVERY`] failures.

pub const REMINDER_EVERY: u32 = 60;

/// `consecutive` counts this failure (1 for the first of a streak).
pub fn should_log_failure(consecutive: u32) -> bool {
    consecutive == 1 || consecutive % REMINDER_EVERY == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn logs_first_then_reminders() {
        let logged: Vec<u32> = (1..=200).filter(|&n| should_log_failure(n)).collect();
        assert_eq!(logged, [1, 60, 120, 180]);
    }
}
