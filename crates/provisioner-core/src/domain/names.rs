//! Names that reach CloudFormation, EventBridge Scheduler, DynamoDB keys and shell scripts. They
//! can only be built valid, so nothing downstream re-checks or escapes them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;

/// Longest cluster name: keeps `destroy.<cluster>.<YYYYMMDDTHHMMSS>` within the Scheduler's 64
/// characters and the stack name well within CloudFormation's 128.
pub const MAX_CLUSTER_NAME_LEN: usize = 40;

/// Names a SlideRule deployment already uses for its own hosts and services under the domain: those
/// the repository's own provisioner reserves (its services and the `docs` and `ps` hosts), and
/// common host names.
pub const RESERVED_CLUSTER_NAMES: &[&str] = &[
    "login",
    "provisioner",
    "client",
    "recorder",
    "runner",
    "mcp",
    "sliderule",
    "monitor",
    "docs",
    "ps",
    "www",
    "api",
    "admin",
];

/// A cluster name: a lowercase DNS label of at most 40 characters that starts with a letter and
/// is not reserved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let shown = shown(raw);
        if raw.is_empty() {
            return Err(Error::invalid(
                "the cluster name is empty; give a lowercase DNS label such as 'developers' or 'ci-nightly'",
            ));
        }
        if raw.len() > MAX_CLUSTER_NAME_LEN {
            return Err(Error::invalid(format!(
                "the cluster name {shown} is longer than {MAX_CLUSTER_NAME_LEN} characters; choose a shorter name"
            )));
        }
        let bytes = raw.as_bytes();
        let well_formed = bytes[0].is_ascii_lowercase()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[bytes.len() - 1] != b'-';
        if !well_formed {
            return Err(Error::invalid(format!(
                "the cluster name {shown} is not a lowercase DNS label; use a-z, 0-9 and '-', starting with a letter \
                    and not ending with '-'"
            )));
        }
        if RESERVED_CLUSTER_NAMES.contains(&raw) {
            return Err(Error::invalid(format!("the cluster name {shown} is reserved; choose another name")));
        }
        Ok(ClusterName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClusterName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        ClusterName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Longest version we accept: enough for any branch, tag or full commit.
pub const MAX_GIT_REF_LEN: usize = 128;

/// A git branch, tag or commit to check out. Only characters no shell interprets, never a leading
/// `-` (an option to git), and none of the forms git itself refuses in a ref name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct GitRef(String);

impl GitRef {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let shown = shown(raw);
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
        let problem = if raw.is_empty() {
            Some("is empty")
        } else if raw.len() > MAX_GIT_REF_LEN {
            Some("is longer than 128 characters")
        } else if !raw.chars().all(allowed) {
            Some("may hold only letters, digits, '.', '_', '-' and '/'")
        } else if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            Some("must start with a letter or digit")
        } else if raw.contains("..")
            || raw.contains("//")
            || raw.contains("/.")
            || raw.ends_with('/')
            || raw.ends_with('.')
            || raw.ends_with(".lock")
        {
            Some("is not a valid git ref name")
        } else {
            None
        };
        match problem {
            Some(why) => Err(Error::invalid(format!(
                "the version {shown} {why}; give a branch, tag or commit such as 'main' or 'v4.5.1'"
            ))),
            None => Ok(GitRef(raw.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GitRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        GitRef::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The Docker tag a version's images carry, as the SlideRule repository tags them: `main` builds
/// `unstable`, a release tag or a branch without '/' builds its own name. A Docker tag cannot hold
/// '/', and `unstable` and `latest` name images rather than versions, so those are refused rather
/// than guessed at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ImageTag(String);

/// The tag the repository gives images built from `main`.
pub const MAIN_IMAGE_TAG: &str = "unstable";
/// The tag the repository gives the images of its newest release.
pub const RELEASE_IMAGE_TAG: &str = "latest";

impl ImageTag {
    pub fn for_version(version: &GitRef) -> Result<ImageTag, Error> {
        let raw = version.as_str();
        if raw == "main" {
            return Ok(ImageTag(MAIN_IMAGE_TAG.to_owned()));
        }
        let why = if raw.contains('/') {
            "cannot name a Docker image tag, which cannot hold '/'; give a release tag such as 'v5.5.0', 'main', or a \
                branch without '/'"
        } else if raw == MAIN_IMAGE_TAG || raw == RELEASE_IMAGE_TAG {
            "is an image tag of the repository's conventions, not a version; give 'main' or a release tag such as \
                'v5.5.0'"
        } else {
            return Ok(ImageTag(raw.to_owned()));
        };
        Err(Error::invalid(format!("the version {} {why}", shown(raw))))
    }

    /// The tag a cluster runs for `version`: a version maps exactly as [`ImageTag::for_version`]
    /// maps it for BUILD, and the repository's own tags `unstable` and `latest` name themselves.
    pub fn to_deploy(version: &GitRef) -> Result<ImageTag, Error> {
        match version.as_str() {
            tag @ (MAIN_IMAGE_TAG | RELEASE_IMAGE_TAG) => Ok(ImageTag(tag.to_owned())),
            _ => ImageTag::for_version(version),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes untrusted input for an error message, cut short and with control characters escaped,
/// so a hostile name cannot forge log lines or flood a response.
pub fn shown(raw: &str) -> String {
    const LIMIT: usize = 64;
    let mut text: String = raw.chars().take(LIMIT).flat_map(char::escape_debug).collect();
    if raw.chars().count() > LIMIT {
        text.push('…');
    }
    format!("'{text}'")
}

/// Who asks, as a caller names itself (the contract's `requested_by`: 1 to 64 letters, digits,
/// `.`, `_`, `@`, `+`, `-`): a person's address or name, or a workflow's actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RequestedBy(String);

impl RequestedBy {
    pub fn parse(raw: &str) -> Result<RequestedBy, Error> {
        let valid =
            (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
        if valid {
            Ok(RequestedBy(raw.to_owned()))
        } else {
            Err(Error::invalid(format!(
                "the requested_by {} is not 1 to 64 letters, digits, '.', '_', '@', '+' or '-'",
                shown(raw)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RequestedBy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        RequestedBy::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_dns_labels() {
        for name in ["developers", "ci-nightly", "ci-1", "a", "a1-b2", &"a".repeat(40)] {
            assert_eq!(ClusterName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        let cases = [
            ("", "empty"),
            (&*"a".repeat(41), "longer than 40"),
            ("Developers", "lowercase DNS label"),
            ("1cluster", "lowercase DNS label"),
            ("-ci", "lowercase DNS label"),
            ("ci-", "lowercase DNS label"),
            ("ci_nightly", "lowercase DNS label"),
            ("ci.nightly", "lowercase DNS label"),
            ("ci nightly", "lowercase DNS label"),
            ("ci;rm -rf /", "lowercase DNS label"),
            ("$(reboot)", "lowercase DNS label"),
            ("ci-`id`", "lowercase DNS label"),
            ("ci-é", "lowercase DNS label"),
            ("sliderule", "reserved"),
            ("monitor", "reserved"),
            ("provisioner", "reserved"),
            ("login", "reserved"),
            ("client", "reserved"),
            ("recorder", "reserved"),
            ("runner", "reserved"),
            ("mcp", "reserved"),
            ("docs", "reserved"),
            ("ps", "reserved"),
        ];
        for (name, reason) in cases {
            let error = ClusterName::parse(name).unwrap_err();
            assert_eq!(error.code(), "InvalidRequest");
            assert!(error.to_string().contains(reason), "{name:?}: {error}");
        }
    }

    #[test]
    fn accepts_branches_tags_and_commits() {
        for raw in ["main", "v4.5.1", "release/4.x", "feature/ams-2_fix", "3f2a9c1", &"a".repeat(40), "HEAD"] {
            assert_eq!(GitRef::parse(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn refuses_versions_a_shell_or_git_would_interpret() {
        let cases = [
            "",
            "-c",
            "--upload-pack=touch x",
            "main;reboot",
            "$(id)",
            "`id`",
            "a b",
            "a\nb",
            "main\n",
            "a'b",
            "a\"b",
            "a|b",
            "a&b",
            "a>b",
            "~1",
            "main^",
            "a:b",
            "a..b",
            "a//b",
            "a/.b",
            "main/",
            "main.",
            "main.lock",
            "a@{1}",
            "*",
            "?",
            "é",
            &*"a".repeat(129),
        ];
        for raw in cases {
            let error = GitRef::parse(raw).unwrap_err();
            assert_eq!(error.code(), "InvalidRequest", "{raw:?}");
        }
    }

    #[test]
    fn versions_map_to_the_image_tags_the_repository_uses_or_are_refused() {
        let tag = |raw: &str| ImageTag::for_version(&GitRef::parse(raw).unwrap());
        for (version, expected) in [
            ("main", "unstable"),
            ("v5.5.0", "v5.5.0"),
            ("v4.8.0", "v4.8.0"),
            ("develop", "develop"),
            ("0123abc", "0123abc"),
        ] {
            assert_eq!(tag(version).unwrap().as_str(), expected, "{version}");
        }
        for version in ["release/4.x", "feature/a-b", "unstable", "latest"] {
            assert_eq!(tag(version).unwrap_err().code(), "InvalidRequest", "{version}");
        }
    }

    #[test]
    fn deploys_run_the_tag_build_pushes_or_a_tag_of_the_repository() {
        let tag = |raw: &str| ImageTag::to_deploy(&GitRef::parse(raw).unwrap());
        for (version, expected) in
            [("main", "unstable"), ("unstable", "unstable"), ("latest", "latest"), ("v5.5.0", "v5.5.0")]
        {
            assert_eq!(tag(version).unwrap().as_str(), expected, "{version}");
        }
        assert_eq!(tag("release/5.x").unwrap_err().code(), "InvalidRequest");
    }

    #[test]
    fn shown_escapes_control_characters_and_truncates() {
        assert_eq!(shown("a\nb"), "'a\\nb'");
        assert!(shown(&"x".repeat(500)).len() < 80);
    }
}
