//! [`Images`] on Amazon ECR: `DescribeImages` of each repository at the tag, in the registry's
//! own account and region (which need not be the provisioner's).

use async_trait::async_trait;
use aws_config::Region;
use aws_sdk_ecr::types::ImageIdentifier;

use super::{aws_error, Aws};
use crate::domain::ImageTag;
use crate::error::{Error, Result};
use crate::ports::Images;

const SERVICE: &str = "ECR";

pub struct EcrImages {
    aws: Aws,
}

impl EcrImages {
    /// Clients are made per registry region, when asked.
    pub fn new(aws: &Aws) -> Self {
        EcrImages { aws: aws.clone() }
    }
}

/// The account and region of an ECR registry host, `ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]`.
pub fn registry_account_and_region(registry: &str) -> Option<(&str, &str)> {
    let mut parts = registry.split('.');
    let (account, dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest: Vec<&str> = parts.collect();
    let valid = account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && ecr == "ecr"
        && !region.is_empty()
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && (rest == ["amazonaws", "com"] || rest == ["amazonaws", "com", "cn"]);
    valid.then_some((account, region))
}

#[async_trait]
impl Images for EcrImages {
    async fn missing(&self, registry: &str, repositories: &[String], tag: &ImageTag) -> Result<Vec<String>> {
        let (account, region) = registry_account_and_region(registry).ok_or_else(|| {
            Error::DeployFailed(format!(
                "the container registry '{registry}' is not an Amazon ECR registry \
                    (ACCOUNT.dkr.ecr.REGION.amazonaws.com), \
                 so the provisioner cannot check its images; set ContainerRegistry in its template to an ECR registry"
            ))
        })?;
        let config = aws_sdk_ecr::config::Builder::from(&self.aws.config)
            .region(Region::new(region.to_owned()))
            .interceptor(self.aws.calls.clone());
        let client = aws_sdk_ecr::Client::from_conf(config.build());
        let mut missing = Vec::new();
        for repository in repositories {
            let found = client
                .describe_images()
                .registry_id(account)
                .repository_name(repository)
                .image_ids(ImageIdentifier::builder().image_tag(tag.as_str()).build())
                .send()
                .await;
            match found {
                Ok(output) if !output.image_details().is_empty() => {}
                Ok(_) => missing.push(repository.clone()),
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_image_not_found_exception() || e.is_repository_not_found_exception()) =>
                {
                    missing.push(repository.clone())
                }
                Err(error) => return Err(aws_error(SERVICE, "DescribeImages", error)),
            }
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_give_their_account_and_region() {
        assert_eq!(
            registry_account_and_region("742127912612.dkr.ecr.us-west-2.amazonaws.com"),
            Some(("742127912612", "us-west-2"))
        );
        assert_eq!(
            registry_account_and_region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            Some(("123456789012", "cn-north-1"))
        );
        for other in
            ["ghcr.io/sliderule", "742127912612.dkr.ecr.us-west-2.example.com", "1.dkr.ecr.us-west-2.amazonaws.com", ""]
        {
            assert_eq!(registry_account_and_region(other), None, "{other}");
        }
    }
}
