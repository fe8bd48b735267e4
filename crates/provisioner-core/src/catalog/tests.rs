//! The shipped catalog and every check of a profile.

use super::*;
use crate::domain::{GitRef, RunKind};

fn name(raw: &str) -> ClusterName {
    ClusterName::parse(raw).unwrap()
}

#[test]
fn the_shipped_catalog_loads_and_accepts_developers_and_ci_names() {
    let catalog = Catalog::shipped().unwrap();
    for cluster in ["developers", "ci-nightly", "ci-1", "ci-pr-1234"] {
        catalog.profile_for(&name(cluster)).unwrap();
    }
}

#[test]
fn the_shipped_catalog_has_no_catch_all() {
    let catalog = Catalog::shipped().unwrap();
    for cluster in ["other", "ci", "developer", "developers2", "xci-1"] {
        assert_eq!(catalog.profile_for(&name(cluster)).unwrap_err().code(), "UnknownCluster", "{cluster}");
    }
}

#[test]
fn the_committed_schema_matches_the_catalog_types() {
    let committed = include_str!("../../../../clusters/catalog.schema.json");
    assert_eq!(committed, json_schema(), "run `make schema` to refresh clusters/catalog.schema.json");
}

#[test]
fn globs_match_whole_names() {
    assert!(glob_matches("ci-*", "ci-1"));
    assert!(glob_matches("ci-*", "ci-"));
    assert!(!glob_matches("ci-*", "xci-1"));
    assert!(glob_matches("developers", "developers"));
    assert!(!glob_matches("developers", "developers2"));
    assert!(glob_matches("a*b*c", "axxbyyc"));
    assert!(!glob_matches("a*b*c", "axxbyy"));
    assert!(!glob_matches("ab*ba", "aba"));
}

const TEMPLATE: &str =
    "Parameters:\n  ClusterName: {Type: String}\n  Version: {Type: String}\n  Domain: {Type: String}\n  \
                        Size: {Type: String}\n  Color: {Type: String, Default: red}\nResources: {}\n";

const PLANS: &str = "plans:\n  layouts: [{name: L, present: [x], components: {}}]\n  test: {steps: [{name: a, run: \
    'true'}]}\n  build: {steps: [{name: b, run: 'true'}]}\nprices: {as_of: 2026-11-01, basis: test, hourly_usd: \
    {c7g.2xlarge: 0.29, m7g.2xlarge: 0.33, c6g.2xlarge: 0.27, t.big: 2.0}}\n";

/// A profile `p` for `match`, with `extra` YAML fields (flow style) added.
fn profile(patterns: &str, extra: &str) -> String {
    format!("- {{name: p, match: {patterns}, template: t.yaml, version: latest, images: [sliderule]{extra}}}\n")
}

fn load(yaml: &str) -> Result<Catalog, Error> {
    Catalog::from_yaml(&format!("{yaml}{PLANS}"), &[("t.yaml", TEMPLATE)])
}

#[test]
fn a_good_catalog_loads() {
    let catalog = load(&format!("profiles:\n{}", profile("[a, 'b-*']", ", parameters: {Size: '3'}"))).unwrap();
    let profile = catalog.profile_for(&name("b-7")).unwrap();
    assert_eq!(profile.default_version.as_str(), "latest");
    let settings =
        ClusterSettings::from([("Domain".into(), "example.org".into()), ("HostedZoneId".into(), "Z1".into())]);
    let tag = ImageTag::to_deploy(&GitRef::parse("main").unwrap()).unwrap();
    let pairs = |list: &[(&str, &str)]| list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    assert_eq!(
        profile.stack_parameters(&name("b-7"), &tag, &settings).unwrap(),
        pairs(&[("ClusterName", "b-7"), ("Version", "unstable"), ("Domain", "example.org"), ("Size", "3")])
    );
    let error = profile.stack_parameters(&name("b-7"), &tag, &ClusterSettings::new()).unwrap_err();
    assert!(error.to_string().contains("Domain parameter"), "{error}");
}

#[test]
fn lifetimes_caps_and_costs_load_and_are_checked() {
    let extra = ", parameters: {Size: '3'}, default_ttl_minutes: 240, max_ttl_minutes: 720, \
        max_concurrent_runs: {test: 2}, instances: [{type_parameter: Color}, {type_parameter: Color, \
        count_parameter: Size}], monthly_budget_usd: 250.5";
    let prices = |yaml: String| yaml.replace("t.big: 2.0", "red: 0.5, blue: 1.5, t.big: 2.0");
    let catalog =
        Catalog::from_yaml(&prices(format!("profiles:\n{}{PLANS}", profile("[a]", extra))), &[("t.yaml", TEMPLATE)])
            .unwrap();
    let loaded = catalog.profile_for(&name("a")).unwrap();
    assert_eq!(loaded.default_ttl, Some(SignedDuration::from_hours(4)));
    assert_eq!(loaded.max_ttl, Some(SignedDuration::from_hours(12)));
    assert_eq!(
        (loaded.max_concurrent_runs.of(RunKind::Test), loaded.max_concurrent_runs.of(RunKind::Build)),
        (Some(2), None)
    );
    assert_eq!(loaded.monthly_budget_usd, Some(250.5));
    // The template's default colour (red, 0.5) once, and per Size (3 from the profile).
    assert_eq!(loaded.hourly_cost(&BTreeMap::new(), catalog.prices()), Some(2.0));
    // The stack's own values win; a type without a price has no cost.
    let stack = BTreeMap::from([("Color".to_owned(), "blue".to_owned()), ("Size".to_owned(), "1".to_owned())]);
    assert_eq!(loaded.hourly_cost(&stack, catalog.prices()), Some(3.0));
    let unpriced = BTreeMap::from([("Color".to_owned(), "green".to_owned())]);
    assert_eq!(loaded.hourly_cost(&unpriced, catalog.prices()), None);

    let cases = [
        (", default_ttl_minutes: 5", "use 10 to 10080"),
        (", max_ttl_minutes: 20000", "use 10 to 10080"),
        (", default_ttl_minutes: 800, max_ttl_minutes: 720", "beyond its max_ttl_minutes"),
        (", max_concurrent_runs: {build: 0}", "caps runs at 0"),
        (", instances: [{type_parameter: Nope}]", "does not declare"),
        (", instances: [{type_parameter: Size}]", "price table"),
        (", runner: {instance_types: [x9.huge]}", "price table"),
        (", monthly_budget_usd: -1", "monthly budget of -1 USD"),
        (", monthly_budget_usd: .nan", "monthly budget of NaN USD"),
    ];
    for (extra, reason) in cases {
        let yaml = format!("profiles:\n{}", profile("[a]", &format!(", parameters: {{Size: '1'}}{extra}")));
        let error = load(&yaml).unwrap_err();
        assert!(error.to_string().contains(reason), "{extra}: {error}");
    }
}

#[test]
fn the_shipped_profiles_set_lifetimes_price_their_clusters_and_budget() {
    let catalog = Catalog::shipped().unwrap();
    for profile in catalog.profiles() {
        let (default, max) = (profile.default_ttl.unwrap(), profile.max_ttl.unwrap());
        assert!(default <= max && max <= SignedDuration::from_hours(12), "{}", profile.name);
        let cost = profile.hourly_cost(&BTreeMap::new(), catalog.prices()).unwrap();
        assert!(cost > 0.0, "{}", profile.name);
        // A budget that a month of one cluster alone would not reach.
        let budget = profile.monthly_budget_usd.unwrap();
        assert!(budget > cost * 24.0 * 31.0, "{}: {budget} for {cost}/h", profile.name);
    }
}

#[test]
fn bad_catalogs_are_refused_with_the_reason() {
    let one = |extra: &str| format!("profiles:\n{}", profile("[a]", extra));
    let cases = [
        ("profiles: []\n".to_owned(), "no profiles"),
        (one(", parameters: {Size: '1'}, extra: 1"), "unknown field"),
        (one(", parameters: {Size: '1'}").replace("t.yaml", "missing.yaml"), "not shipped"),
        (format!("profiles:\n{}", profile("['*']", ", parameters: {Size: '1'}")), "catch-all"),
        (format!("profiles:\n{}", profile("['A*']", ", parameters: {Size: '1'}")), "pattern"),
        (format!("profiles:\n{}", profile("[]", ", parameters: {Size: '1'}")), "matches no names"),
        (one(""), "requires"),
        (one(", parameters: {Size: '1', Nope: x}"), "does not declare"),
        (one(", parameters: {Size: '1', ClusterName: x}"), "provisioner sets"),
        (one(", parameters: {Size: '1', Version: x}"), "provisioner sets"),
        (one(", parameters: {Size: '1', Domain: x}"), "provisioner sets"),
        (one(", parameters: {Size: '1'}").replace("version: latest", "version: release/5.x"), "default version"),
        (one(", parameters: {Size: '1'}").replace("images: [sliderule]", "images: []"), "image repositories"),
        (one(", parameters: {Size: '1'}").replace("images: [sliderule]", "images: ['Bad Name']"), "image repositories"),
        (
            format!(
                "profiles:\n{}{}",
                profile("[a]", ", parameters: {Size: '1'}"),
                profile("[b]", ", parameters: {Size: '1'}")
            ),
            "twice",
        ),
    ];
    for (yaml, reason) in cases {
        let error = load(&yaml).unwrap_err();
        assert!(error.to_string().contains(reason), "{yaml}: {error}");
    }
}
