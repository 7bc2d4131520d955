//! Start-up against a backend that is not answering yet: a role started before its MongoDB or
//! Kafka broker (or while one restarts) waits for it, retrying with backoff for up to
//! `STARTUP_TIMEOUT`, instead of exiting on the first attempt that timed out.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ConfigError;

/// The first pause between attempts; each failure doubles it up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds or `within` has passed, pausing 0.25 s, 0.5 s, … 5 s between
/// attempts and logging each failure at WARN. Only a backend's failure is retried
/// ([`ConfigError::Backend`]): a missing or invalid setting fails at once. The last error is
/// returned when the time is up.
pub(crate) async fn retry_backend<T, F, Fut>(
    backend: &'static str,
    within: Duration,
    mut attempt: F,
) -> Result<T, ConfigError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConfigError>>,
{
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    let mut attempts = 1u32;
    loop {
        let error = match attempt().await {
            Ok(value) => {
                if attempts > 1 {
                    tracing::info!(backend, attempts, "backend answered; starting");
                }
                return Ok(value);
            }
            Err(error @ ConfigError::Backend { .. }) => error,
            Err(error) => return Err(error),
        };
        if Instant::now() + pause >= deadline {
            return Err(error);
        }
        tracing::warn!(
            backend,
            attempts,
            retry_in_ms = pause.as_millis() as u64,
            %error,
            "backend unavailable at start-up; retrying until STARTUP_TIMEOUT"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
        attempts += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unavailable() -> ConfigError {
        ConfigError::Backend {
            variable: "MONGO_URI",
            reason: "MongoDB did not answer".to_owned(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_answers_on_the_third_attempt_is_waited_for() {
        let calls = AtomicU32::new(0);
        let value = retry_backend("mongodb", Duration::from_secs(60), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(unavailable()),
                _ => Ok(7),
            }
        })
        .await
        .expect("answered in time");
        assert_eq!(value, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_error_is_returned_when_the_time_is_up() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let result: Result<(), _> = retry_backend("mongodb", Duration::from_secs(10), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(unavailable())
        })
        .await;
        assert!(matches!(result, Err(ConfigError::Backend { .. })));
        assert!(started.elapsed() <= Duration::from_secs(10));
        // 0.25 + 0.5 + 1 + 2 + 4 = 7.75 s of pauses fit in 10 s; the next 5 s one does not.
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_setting_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry_backend("mongodb", Duration::from_secs(60), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ConfigError::Missing {
                variable: "MONGO_URI",
                role: "relay",
            })
        })
        .await;
        assert!(matches!(result, Err(ConfigError::Missing { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
