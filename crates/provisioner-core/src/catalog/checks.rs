//! The checks a profile of the file passes before it is a [`Profile`]: name and patterns, template
//! and parameters, version and images, runner, lifetimes, caps and prices.

use std::collections::BTreeMap;

use jiff::SignedDuration;

use crate::domain::{GitRef, ImageTag};

use super::*;

/// A profile's parameters as its template declares them: whether each has a default, and the
/// defaults.
struct Declared {
    has_default: BTreeMap<String, bool>,
    defaults: BTreeMap<String, String>,
}

impl Profile {
    /// A profile of the catalog file, checked: its name and patterns, its template and parameters,
    /// its default version and images, its runner, lifetimes and caps, and that every instance
    /// type it uses is priced.
    pub(super) fn from_file(
        raw: ProfileFile,
        templates: &[(&str, &'static str)],
        prices: &Prices,
    ) -> Result<Profile, String> {
        let name = raw.name.clone();
        check_name_and_patterns(&raw)?;
        let template_body = templates
            .iter()
            .find(|(file, _)| *file == raw.template)
            .map(|(_, body)| *body)
            .ok_or_else(|| format!("profile '{name}' names template '{}', which is not shipped", raw.template))?;
        let declared = declared_parameters(template_body, &raw.template)?;
        check_parameters(&raw, &declared)?;
        let default_version = GitRef::parse(&raw.version)
            .and_then(|version| ImageTag::to_deploy(&version))
            .map_err(|why| format!("profile '{name}' has default version '{}': {why}", raw.version))?;
        check_images(&raw)?;
        raw.runner.check(&name)?;
        check_lifetimes(&name, raw.default_ttl_minutes, raw.max_ttl_minutes)?;
        if raw.max_concurrent_runs.test == Some(0) || raw.max_concurrent_runs.build == Some(0) {
            return Err(format!("profile '{name}' caps runs at 0; give at least 1, or no cap"));
        }
        check_priced(&raw, &declared, prices)?;
        if let Some(budget) = raw.monthly_budget_usd.filter(|usd| !usd.is_finite() || *usd < 0.0) {
            return Err(format!("profile '{name}' has a monthly budget of {budget} USD; give 0 or more, or none"));
        }
        let minutes = |m: Option<u32>| m.map(|m| SignedDuration::from_mins(i64::from(m)));
        Ok(Profile {
            name,
            patterns: raw.patterns,
            template_body,
            declared: declared.has_default,
            default_version,
            images: raw.images,
            parameters: raw.parameters,
            runner: raw.runner,
            defaults: declared.defaults,
            default_ttl: minutes(raw.default_ttl_minutes),
            max_ttl: minutes(raw.max_ttl_minutes),
            max_concurrent_runs: raw.max_concurrent_runs,
            instances: raw.instances,
            monthly_budget_usd: raw.monthly_budget_usd,
        })
    }
}

/// A lowercase DNS label, matching names by patterns of its own (no catch-all).
fn check_name_and_patterns(raw: &ProfileFile) -> Result<(), String> {
    let name = &raw.name;
    let label = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !label {
        return Err(format!("profile name '{name}' is not a lowercase DNS label"));
    }
    if raw.patterns.is_empty() {
        return Err(format!("profile '{name}' matches no names"));
    }
    for pattern in &raw.patterns {
        let valid = !pattern.is_empty()
            && pattern.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*');
        if !valid || pattern.bytes().all(|b| b == b'*') {
            return Err(format!(
                "profile '{name}' has pattern '{pattern}'; use lowercase names with '*' wildcards, and no catch-all"
            ));
        }
    }
    Ok(())
}

fn declared_parameters(template_body: &str, template: &str) -> Result<Declared, String> {
    let defaults = template_parameters(template_body).map_err(|why| format!("template '{template}': {why}"))?;
    let has_default = defaults.iter().map(|(k, v)| (k.clone(), v.is_some())).collect();
    let defaults = defaults.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    Ok(Declared { has_default, defaults })
}

/// A profile sets only what its template declares and the provisioner does not set, and every
/// parameter the template requires is set by someone.
fn check_parameters(raw: &ProfileFile, declared: &Declared) -> Result<(), String> {
    let (name, template) = (&raw.name, &raw.template);
    for key in raw.parameters.keys() {
        if is_provided(key) {
            return Err(format!("profile '{name}' sets '{key}', which the provisioner sets"));
        }
        if !declared.has_default.contains_key(key) {
            return Err(format!("profile '{name}' sets '{key}', which template '{template}' does not declare"));
        }
    }
    for (key, has_default) in &declared.has_default {
        if !has_default && !raw.parameters.contains_key(key) && !is_provided(key) {
            return Err(format!("profile '{name}' does not set '{key}', which template '{template}' requires"));
        }
    }
    for key in REQUIRED_PARAMETERS {
        if !declared.has_default.contains_key(*key) {
            return Err(format!("template '{template}' does not declare the {key} parameter"));
        }
    }
    Ok(())
}

fn check_images(raw: &ProfileFile) -> Result<(), String> {
    let repository = |r: &String| {
        !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
    };
    if raw.images.is_empty() || !raw.images.iter().all(repository) {
        return Err(format!(
            "profile '{}' needs the image repositories its template runs, such as 'sliderule'",
            raw.name
        ));
    }
    Ok(())
}

/// Every instance type the profile's runs and clusters use is in the price table.
fn check_priced(raw: &ProfileFile, declared: &Declared, prices: &Prices) -> Result<(), String> {
    let name = &raw.name;
    let priced = |instance_type: &str, what: &str| match prices.hourly(instance_type) {
        Some(price) if price.is_finite() && price >= 0.0 => Ok(()),
        _ => Err(format!(
            "profile '{name}' uses instance type '{instance_type}' ({what}), which the price table does not list"
        )),
    };
    for instance_type in &raw.runner.instance_types {
        priced(instance_type, "runner")?;
    }
    for instances in &raw.instances {
        for parameter in std::iter::once(&instances.type_parameter).chain(&instances.count_parameter) {
            if !declared.has_default.contains_key(parameter) {
                return Err(format!(
                    "profile '{name}' counts instances by '{parameter}', which template '{}' does not declare",
                    raw.template
                ));
            }
        }
        let parameter = &instances.type_parameter;
        match raw.parameters.get(parameter).or(declared.defaults.get(parameter)) {
            Some(instance_type) => priced(instance_type, parameter)?,
            None => return Err(format!("profile '{name}' gives no instance type for '{parameter}'")),
        }
    }
    Ok(())
}

fn check_lifetimes(profile: &str, default: Option<u32>, max: Option<u32>) -> Result<(), String> {
    for (what, minutes) in [("default_ttl_minutes", default), ("max_ttl_minutes", max)] {
        if minutes.is_some_and(|m| !(10..=10080).contains(&m)) {
            return Err(format!("profile '{profile}' has {what} {}; use 10 to 10080 (a week)", minutes.unwrap_or(0)));
        }
    }
    if let (Some(default), Some(max)) = (default, max) {
        if default > max {
            return Err(format!(
                "profile '{profile}' has default_ttl_minutes {default} beyond its max_ttl_minutes {max}"
            ));
        }
    }
    Ok(())
}

/// The template's parameters, each with its default as text, if it has one.
fn template_parameters(body: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let template: serde_yaml::Value = serde_yaml::from_str(body).map_err(|e| e.to_string())?;
    let parameters =
        template.get("Parameters").and_then(serde_yaml::Value::as_mapping).ok_or("it has no Parameters section")?;
    parameters
        .iter()
        .map(|(key, spec)| {
            let key = key.as_str().ok_or("a parameter name is not a string")?;
            let default = spec.get("Default").map(|value| match value {
                serde_yaml::Value::String(text) => text.clone(),
                other => serde_yaml::to_string(other).unwrap_or_default().trim().to_owned(),
            });
            Ok((key.to_owned(), default))
        })
        .collect()
}
