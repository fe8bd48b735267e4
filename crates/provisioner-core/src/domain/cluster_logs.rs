//! Where a destroy keeps a cluster's container logs, and the commands each instance runs to
//! copy them there (SSM Run Command's `AWS-RunShellScript`). Every value is checked and quoted.

use jiff::Timestamp;

use crate::domain::ClusterName;

/// How long a destroy waits, in all, for the instances to copy their logs.
pub const LOGS_WAIT_SECONDS: u64 = 60;

/// `s3://<bucket>/clusters/<cluster>/<destroy time>/`: one destroy's logs, an instance per folder.
/// `None` when the bucket is not a bucket name (nothing is asked of the instances then).
pub fn logs_location(bucket: &str, cluster: &ClusterName, at: Timestamp) -> Option<String> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.']);
    valid.then(|| format!("s3://{bucket}/clusters/{cluster}/{}/", at.strftime("%Y%m%dT%H%M%SZ")))
}

/// The instance's folder under a destroy's `location`; `None` for a value that is not an
/// instance id.
pub fn instance_destination(location: &str, instance_id: &str) -> Option<String> {
    let valid = instance_id.len() <= 32
        && instance_id
            .strip_prefix("i-")
            .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then(|| format!("{location}{instance_id}/"))
}

/// The shell commands that copy every container's log (running or stopped) to `destination`.
pub fn copy_commands(destination: &str) -> Vec<String> {
    // Checked values hold no quote; single-quoted all the same.
    let destination = format!("'{}'", destination.replace('\'', r"'\''"));
    vec![
        "set -u".into(),
        "dir=$(mktemp -d)".into(),
        "for name in $(docker ps -a --format '{{.Names}}'); do docker logs --timestamps \"$name\" >\"$dir/$name.log\" 2>&1; done"
            .into(),
        "docker ps -a >\"$dir/containers.txt\" 2>&1 || true".into(),
        format!("aws s3 cp --recursive --only-show-errors \"$dir\" {destination}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_go_under_the_cluster_and_the_destroy_time_one_folder_per_instance() {
        let at: Timestamp = "2026-12-02T18:00:00Z".parse().unwrap();
        let cluster = ClusterName::parse("ci-1").unwrap();
        let location = logs_location("run-logs", &cluster, at).unwrap();
        assert_eq!(location, "s3://run-logs/clusters/ci-1/20261202T180000Z/");
        assert_eq!(instance_destination(&location, "i-0abc").unwrap(), format!("{location}i-0abc/"));
        for bad in ["", "Run Logs", "a", "x;y"] {
            assert_eq!(logs_location(bad, &cluster, at), None, "{bad}");
        }
        for bad in ["i-", "i-0abc; reboot", "instance", "i-$(id)"] {
            assert_eq!(instance_destination(&location, bad), None, "{bad}");
        }
        let commands = copy_commands(&format!("{location}i-0abc/"));
        assert!(commands.last().unwrap().ends_with("'s3://run-logs/clusters/ci-1/20261202T180000Z/i-0abc/'"));
    }
}
