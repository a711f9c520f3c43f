//! When a version that failed to deploy is tried again: the plan holds it back until then, so a
//! broken release is not reinstalled on every pass.

use milky_core::Version;

use crate::state_dir::Failure;

/// What the agent remembers after `version` of an app failed at `at` (unix seconds), given what
/// it remembered before. Attempts count up while the same version keeps failing, and each waits
/// longer ([`Failure::backoff_secs`]). A full disk (`no_space`) is this server's problem, not the
/// release's: it is tried again the next pass (the report says why meanwhile).
pub(super) fn failed(
    previous: Option<&Failure>,
    version: &Version,
    index_etag: Option<String>,
    error: String,
    no_space: bool,
    at: u64,
) -> Failure {
    let attempts = previous
        .filter(|f| &f.version == version)
        .map_or(0, |f| f.attempts)
        + 1;
    let retry_at = if no_space {
        at
    } else {
        at + Failure::backoff_secs(attempts)
    };
    Failure {
        version: version.clone(),
        index_etag,
        attempts,
        error,
        failed_at: at,
        retry_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn the_same_version_waits_longer_each_time() {
        let first = failed(
            None,
            &v("v2"),
            Some("\"e1\"".into()),
            "boom".into(),
            false,
            1000,
        );
        assert_eq!(
            first,
            Failure {
                version: v("v2"),
                index_etag: Some("\"e1\"".into()),
                attempts: 1,
                error: "boom".into(),
                failed_at: 1000,
                retry_at: 1060,
            }
        );
        let second = failed(Some(&first), &v("v2"), None, "again".into(), false, 2000);
        assert_eq!(
            (second.attempts, second.retry_at, second.error.as_str()),
            (2, 2120, "again")
        );
        let third = failed(Some(&second), &v("v2"), None, "again".into(), false, 3000);
        assert_eq!((third.attempts, third.retry_at), (3, 3240));
    }

    #[test]
    fn another_version_starts_counting_again() {
        let mut previous = failed(None, &v("v2"), None, "boom".into(), false, 0);
        for at in 1..6 {
            previous = failed(Some(&previous), &v("v2"), None, "boom".into(), false, at);
        }
        assert_eq!(previous.attempts, 6);
        let next = failed(Some(&previous), &v("v3"), None, "other".into(), false, 100);
        assert_eq!(
            (next.version, next.attempts, next.retry_at),
            (v("v3"), 1, 160)
        );
    }

    #[test]
    fn a_full_disk_is_tried_again_next_pass_but_still_counted() {
        let first = failed(None, &v("v2"), None, "no space".into(), true, 500);
        assert_eq!((first.attempts, first.retry_at), (1, 500));
        let second = failed(Some(&first), &v("v2"), None, "no space".into(), true, 600);
        assert_eq!((second.attempts, second.retry_at), (2, 600));
        let then_broken = failed(Some(&second), &v("v2"), None, "boom".into(), false, 700);
        assert_eq!((then_broken.attempts, then_broken.retry_at), (3, 700 + 240));
    }

    #[test]
    fn the_wait_is_capped_at_six_hours() {
        let mut failure = failed(None, &v("v2"), None, "boom".into(), false, 0);
        for _ in 0..40 {
            failure = failed(Some(&failure), &v("v2"), None, "boom".into(), false, 0);
        }
        assert_eq!(failure.attempts, 41);
        assert_eq!(failure.retry_at, 6 * 3600);
    }
}
