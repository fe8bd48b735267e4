//! Runner images: AMIs a `runner_image` run made of an instance whose host-tool steps passed.
//! Which one a TEST run launches from, and which the sweeper retires.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{tags, RunId, RunKind};

/// How many runner images of each architecture the sweeper keeps: the newest, and the one before
/// it while runs may still launch from it.
pub const KEPT_PER_ARCHITECTURE: usize = 2;

/// What a runner image run's instance reports it holds once its steps passed: the digest of the
/// build environment it pulled (`sha256:…`) and the versions of the tools it installed
/// (`git=2.47.1 make=4.3 …`). Each is kept only in its own shape: it becomes an AMI tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHolds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<String>,
}

impl ImageHolds {
    /// The parts that have their shape; the rest dropped.
    pub fn checked(build_image_digest: Option<String>, tools: Option<String>) -> ImageHolds {
        let digest_shaped = |d: &String| {
            d.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        let tools_shaped = |t: &String| {
            !t.is_empty() && t.len() <= 200 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b" =._-".contains(&b))
        };
        ImageHolds { build_image_digest: build_image_digest.filter(digest_shaped), tools: tools.filter(tools_shaped) }
    }

    /// Its AMI tags.
    pub fn tags(&self) -> Vec<(String, String)> {
        let digest = self.build_image_digest.clone().map(|d| (tags::BUILD_IMAGE_DIGEST.to_owned(), d));
        let tools = self.tools.clone().map(|t| (tags::TOOLS.to_owned(), t));
        digest.into_iter().chain(tools).collect()
    }
}

/// One runner image as EC2 lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerImage {
    pub id: String,
    /// `pending`, `available`, `failed`, ... as EC2 says.
    pub state: String,
    pub architecture: String,
    /// The hash of the runner image plan that made it ([`crate::instance::Plan::hash`]).
    pub plan_hash: String,
    /// The run that made it.
    pub run_id: Option<RunId>,
    /// The build-environment image its run pulled (a TEST run pulls again: the tag moves).
    pub build_image: Option<String>,
    /// What its run's instance said it holds.
    pub holds: ImageHolds,
    pub created_at: Option<Timestamp>,
    /// The EBS snapshots behind it, deleted with it.
    pub snapshots: Vec<String>,
}

impl RunnerImage {
    pub fn available(&self) -> bool {
        self.state == "available"
    }

    /// The image EC2 lists with `tags`; `None` for one that is not a runner image.
    pub fn from_tags(
        id: String,
        state: String,
        created_at: Option<Timestamp>,
        tags: &BTreeMap<String, String>,
        snapshots: Vec<String>,
    ) -> Option<RunnerImage> {
        let ours = tags.get(tags::PROVISIONER).map(String::as_str) == Some("true")
            && tags.get(tags::KIND).map(String::as_str) == Some(RunKind::RunnerImage.as_str());
        ours.then(|| RunnerImage {
            id,
            state,
            architecture: tags.get(tags::ARCHITECTURE).cloned().unwrap_or_default(),
            plan_hash: tags.get(tags::PLAN_HASH).cloned().unwrap_or_default(),
            run_id: tags.get(tags::RUN_ID).and_then(|id| RunId::parse(id).ok()),
            build_image: tags.get(tags::BUILD_IMAGE).cloned(),
            holds: ImageHolds::checked(tags.get(tags::BUILD_IMAGE_DIGEST).cloned(), tags.get(tags::TOOLS).cloned()),
            created_at,
            snapshots,
        })
    }
}

/// The tags of the image `run_id` makes of the runner image plan of `plan_hash` (its run having
/// pulled `build_image`), and of its snapshots: what [`RunnerImage::from_tags`] reads back.
pub fn image_tags(
    architecture: &str,
    plan_hash: &str,
    build_image: &str,
    run_id: &RunId,
    now: Timestamp,
) -> Vec<(String, String)> {
    [
        (tags::PROVISIONER, "true".to_owned()),
        (tags::BUILD_IMAGE, build_image.to_owned()),
        (tags::KIND, RunKind::RunnerImage.as_str().to_owned()),
        (tags::ARCHITECTURE, architecture.to_owned()),
        (tags::PLAN_HASH, plan_hash.to_owned()),
        (tags::RUN_ID, run_id.to_string()),
        (tags::CREATED_ON, now.strftime("%Y-%m-%d").to_string()),
        ("Name", image_name(architecture, run_id)),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// The image a TEST run of `architecture` launches from at `now`: the newest available one made
/// by the plan of `plan_hash` that is younger than `max_age_days`; none when no image fits.
pub fn choose<'a>(
    images: &'a [RunnerImage],
    architecture: &str,
    plan_hash: &str,
    max_age_days: u32,
    now: Timestamp,
) -> Option<&'a RunnerImage> {
    let oldest = now - SignedDuration::from_hours(24 * i64::from(max_age_days));
    images
        .iter()
        .filter(|image| image.available() && image.architecture == architecture && image.plan_hash == plan_hash)
        .filter(|image| image.created_at.is_some_and(|created| created > oldest))
        .max_by_key(|image| (image.created_at, image.id.clone()))
}

/// The images the sweeper deregisters: per architecture, every one but the newest
/// [`KEPT_PER_ARCHITECTURE`] available ones, and failed ones; never one still being made, nor one
/// that `in_use` (the images of active runs) names.
pub fn to_retire<'a>(images: &'a [RunnerImage], in_use: &BTreeSet<String>) -> Vec<&'a RunnerImage> {
    let mut by_architecture: BTreeMap<&str, Vec<&RunnerImage>> = BTreeMap::new();
    for image in images.iter().filter(|image| image.available()) {
        by_architecture.entry(image.architecture.as_str()).or_default().push(image);
    }
    let mut retired: Vec<&RunnerImage> = Vec::new();
    for mut kept in by_architecture.into_values() {
        kept.sort_by_key(|image| std::cmp::Reverse((image.created_at, image.id.clone())));
        retired.extend(kept.into_iter().skip(KEPT_PER_ARCHITECTURE));
    }
    retired.extend(images.iter().filter(|image| image.state == "failed"));
    retired.retain(|image| !in_use.contains(&image.id));
    retired.sort_by(|a, b| a.id.cmp(&b.id));
    retired
}

/// The name of the image run `run_id` makes: unique, and within EC2's 3 to 128 characters of
/// letters, digits and `()[]./-'@_`.
pub fn image_name(architecture: &str, run_id: &RunId) -> String {
    format!("sliderule-runner-{architecture}-{run_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD_ENV: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com/sliderule-buildenv:latest";

    fn image(id: &str, architecture: &str, hash: &str, created: &str) -> RunnerImage {
        RunnerImage {
            id: id.into(),
            state: "available".into(),
            architecture: architecture.into(),
            plan_hash: hash.into(),
            run_id: None,
            build_image: None,
            holds: ImageHolds::default(),
            created_at: Some(created.parse().unwrap()),
            snapshots: vec![format!("snap-{id}")],
        }
    }

    fn now() -> Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_test_run_takes_the_newest_image_of_its_architecture_and_plan_within_the_age() {
        let images = [
            image("ami-old", "arm64", "h1", "2026-11-10T00:00:00Z"),
            image("ami-new", "arm64", "h1", "2026-12-01T00:00:00Z"),
            image("ami-x86", "x86_64", "h1", "2026-12-02T00:00:00Z"),
            image("ami-otherplan", "arm64", "h0", "2026-12-03T00:00:00Z"),
            RunnerImage { state: "pending".into(), ..image("ami-pending", "arm64", "h1", "2026-12-03T11:00:00Z") },
        ];
        assert_eq!(choose(&images, "arm64", "h1", 14, now()).map(|i| i.id.as_str()), Some("ami-new"));
        assert_eq!(choose(&images, "x86_64", "h1", 14, now()).map(|i| i.id.as_str()), Some("ami-x86"));
        // Too old: 23 days, then 2 days, against a limit of 1 day.
        assert_eq!(choose(&images[..1], "arm64", "h1", 14, now()), None);
        assert_eq!(choose(&images[..2], "arm64", "h1", 1, now()), None);
        assert_eq!(choose(&images, "arm64", "h2", 14, now()), None, "no image of this plan");
        assert_eq!(choose(&[], "arm64", "h1", 14, now()), None);
    }

    #[test]
    fn the_sweeper_keeps_the_newest_two_per_architecture_and_any_in_use() {
        let images = [
            image("ami-1", "arm64", "h1", "2026-11-01T00:00:00Z"),
            image("ami-2", "arm64", "h1", "2026-11-08T00:00:00Z"),
            image("ami-3", "arm64", "h2", "2026-11-15T00:00:00Z"),
            image("ami-4", "arm64", "h2", "2026-11-22T00:00:00Z"),
            image("ami-5", "x86_64", "h1", "2026-11-01T00:00:00Z"),
            image("ami-6", "x86_64", "h1", "2026-11-02T00:00:00Z"),
            RunnerImage { state: "pending".into(), ..image("ami-7", "arm64", "h2", "2026-12-01T00:00:00Z") },
            RunnerImage { state: "failed".into(), ..image("ami-8", "arm64", "h2", "2026-12-02T00:00:00Z") },
        ];
        let ids = |retired: Vec<&RunnerImage>| retired.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(to_retire(&images, &BTreeSet::new())), ["ami-1", "ami-2", "ami-8"]);
        let in_use = BTreeSet::from(["ami-1".to_owned()]);
        assert_eq!(ids(to_retire(&images, &in_use)), ["ami-2", "ami-8"]);
        assert!(to_retire(&images[4..6], &BTreeSet::new()).is_empty());
    }

    #[test]
    fn an_image_is_read_back_from_its_tags() {
        let run_id = RunId::parse("image-ci-runner-image-20261203t120000-ab12").unwrap();
        let tags: BTreeMap<String, String> = image_tags("arm64", "h1", BUILD_ENV, &run_id, now()).into_iter().collect();
        assert_eq!(tags["sliderule:created-on"], "2026-12-03");
        let read = RunnerImage::from_tags("ami-1".into(), "available".into(), Some(now()), &tags, vec![]).unwrap();
        assert_eq!((read.architecture.as_str(), read.plan_hash.as_str()), ("arm64", "h1"));
        assert_eq!(read.run_id, Some(run_id));
        assert_eq!(read.build_image.as_deref(), Some(BUILD_ENV));
        let mut theirs = tags.clone();
        theirs.remove(tags::PROVISIONER);
        assert_eq!(RunnerImage::from_tags("ami-2".into(), "available".into(), None, &theirs, vec![]), None);
    }

    #[test]
    fn image_names_fit_ec2_for_the_longest_run_ids() {
        let run_id = RunId::parse(&format!("image-{}", "a".repeat(94))).unwrap();
        let name = image_name("x86_64", &run_id);
        assert!((3..=128).contains(&name.len()), "{name}");
    }

    #[test]
    fn what_an_image_holds_keeps_only_its_own_shape_and_becomes_its_tags() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let holds = ImageHolds::checked(Some(digest.clone()), Some("git=2.47.1 make=4.3 node=20.18.0".into()));
        assert_eq!(
            holds.tags(),
            [
                (tags::BUILD_IMAGE_DIGEST.to_owned(), digest),
                (tags::TOOLS.to_owned(), "git=2.47.1 make=4.3 node=20.18.0".into())
            ]
        );
        for (digest, tools) in [
            ("sha256:abc", "git=2.47.1, make"),
            ("md5:00", "git=$(reboot)"),
            (&*format!("sha256:{}", "g".repeat(64)), &*"x".repeat(201)),
        ] {
            let holds = ImageHolds::checked(Some(digest.into()), Some(tools.into()));
            assert_eq!(holds, ImageHolds::default(), "{digest} {tools}");
        }
    }
}
