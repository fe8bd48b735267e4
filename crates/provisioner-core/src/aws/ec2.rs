//! [`Instances`] on EC2, with the AMI from the public SSM parameter of Amazon Linux 2023.

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceType, MarketType, ResourceType, ShutdownBehavior, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification, VolumeType,
};

use super::{aws_error, Aws};
use crate::domain::{tags, Market, RunId, RunKind, RunnerImage};
use crate::error::Result;
use crate::ports::{InstanceState, Instances, LaunchSpec, TaggedInstance};

const SERVICE: &str = "EC2";

pub struct Ec2Instances {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
}

impl Ec2Instances {
    pub fn new(aws: &Aws) -> Self {
        Ec2Instances { ec2: crate::aws_client!(aws_sdk_ec2, aws), ssm: crate::aws_client!(aws_sdk_ssm, aws) }
    }

    /// The instance as EC2 describes it, in any state; `None` when EC2 does not know it.
    async fn described(&self, instance_id: &str) -> Result<Option<aws_sdk_ec2::types::Instance>> {
        let output = match self.ec2.describe_instances().instance_ids(instance_id).send().await {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(is_missing_instance) => return Ok(None),
            Err(error) => return Err(aws_error(SERVICE, "DescribeInstances", error)),
        };
        Ok(output
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .cloned())
    }
}

/// The public parameter that names the current AWS-provided Amazon Linux 2023 AMI.
pub fn image_parameter(architecture: &str) -> String {
    format!("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{architecture}")
}

/// Instances that have not begun to terminate.
fn live_states() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(InstanceState::ALL.iter().filter(|s| s.is_live()).map(|s| s.as_str().to_owned()).collect()))
        .build()
}

fn tagged_instance(instance: &aws_sdk_ec2::types::Instance) -> Option<TaggedInstance> {
    Some(TaggedInstance {
        id: instance.instance_id()?.to_owned(),
        state: InstanceState::parse(instance.state()?.name()?.as_str())?,
        instance_type: instance.instance_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
        launched_at: instance.launch_time().and_then(|t| jiff::Timestamp::from_second(t.secs()).ok()),
        tags: instance
            .tags()
            .iter()
            .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value().unwrap_or_default().to_owned())))
            .collect(),
    })
}

/// The image or snapshot is gone already (another sweep retired it).
fn is_gone_image<E: aws_sdk_ec2::error::ProvideErrorMetadata>(error: &E) -> bool {
    error.code().is_some_and(|c| c.starts_with("InvalidAMIID") || c.starts_with("InvalidSnapshot"))
}

fn is_missing_instance<E: aws_sdk_ec2::error::ProvideErrorMetadata>(error: &E) -> bool {
    error.code().is_some_and(|c| c.starts_with("InvalidInstanceID"))
}

/// Tokens required (IMDSv2), and one hop: a container on Docker's bridge network (one more) gets
/// no token, so no role credentials (the AMI's default is 2); steps reach only a stand-in.
fn metadata_options() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_put_response_hop_limit(1)
        .build()
}

/// An encrypted gp3 root volume of `volume_gb`, deleted with the instance.
fn root_volume(volume_gb: i32) -> BlockDeviceMapping {
    let ebs = EbsBlockDevice::builder()
        .volume_size(volume_gb)
        .volume_type(VolumeType::Gp3)
        .encrypted(true)
        .delete_on_termination(true)
        .build();
    BlockDeviceMapping::builder().device_name("/dev/xvda").ebs(ebs).build()
}

/// A one-time spot request, terminated on interruption.
fn one_time_spot() -> InstanceMarketOptionsRequest {
    let spot = SpotMarketOptions::builder()
        .spot_instance_type(SpotInstanceType::OneTime)
        .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
        .build();
    InstanceMarketOptionsRequest::builder().market_type(MarketType::Spot).spot_options(spot).build()
}

#[async_trait]
impl Instances for Ec2Instances {
    async fn latest_image(&self, architecture: &str) -> Result<String> {
        let output = self
            .ssm
            .get_parameter()
            .name(image_parameter(architecture))
            .send()
            .await
            .map_err(|error| aws_error("SSM", "GetParameter", error))?;
        Ok(output.parameter().and_then(|p| p.value()).unwrap_or_default().to_owned())
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<String> {
        let tags: Vec<Tag> = spec.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let tagged = |resource: ResourceType| {
            TagSpecification::builder().resource_type(resource).set_tags(Some(tags.clone())).build()
        };
        let mut request = self
            .ec2
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .user_data(aws_smithy_types::base64::encode(spec.user_data.as_bytes()))
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .metadata_options(metadata_options())
            .block_device_mappings(root_volume(spec.volume_gb))
            .tag_specifications(tagged(ResourceType::Instance))
            .tag_specifications(tagged(ResourceType::Volume))
            .client_token(&spec.client_token);
        // Together with the limits of every other request, checked in make test by tools/guard/aws_guard.py.
        if spec.market == Market::Spot {
            request = request.instance_market_options(one_time_spot());
        }
        if let Some(subnet) = &spec.subnet_id {
            request = request.subnet_id(subnet);
        }
        if !spec.security_group_ids.is_empty() {
            request = request.set_security_group_ids(Some(spec.security_group_ids.clone()));
        }
        if let Some(profile) = &spec.instance_profile {
            request = request.iam_instance_profile(IamInstanceProfileSpecification::builder().name(profile).build());
        }
        let output = request.send().await.map_err(|error| aws_error(SERVICE, "RunInstances", error))?;
        Ok(output.instances().first().and_then(|i| i.instance_id()).unwrap_or_default().to_owned())
    }

    async fn of_run(&self, run_id: &RunId) -> Result<Vec<TaggedInstance>> {
        let output = self
            .ec2
            .describe_instances()
            .filters(Filter::builder().name(format!("tag:{}", tags::RUN_ID)).values(run_id.as_str()).build())
            .filters(live_states())
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "DescribeInstances", error))?;
        Ok(output.reservations().iter().flat_map(|r| r.instances()).filter_map(tagged_instance).collect())
    }

    async fn of_runs(&self) -> Result<Vec<TaggedInstance>> {
        let kinds: Vec<String> = RunKind::ALL.iter().map(|kind| kind.as_str().to_owned()).collect();
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let output = self
                .ec2
                .describe_instances()
                .filters(Filter::builder().name(format!("tag:{}", tags::KIND)).set_values(Some(kinds.clone())).build())
                .filters(live_states())
                .set_next_token(token)
                .send()
                .await
                .map_err(|error| aws_error(SERVICE, "DescribeInstances", error))?;
            found.extend(output.reservations().iter().flat_map(|r| r.instances()).filter_map(tagged_instance));
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    async fn state(&self, instance_id: &str) -> Result<Option<InstanceState>> {
        Ok(self.described(instance_id).await?.and_then(|i| InstanceState::parse(i.state()?.name()?.as_str())))
    }

    async fn run_of(&self, instance_id: &str) -> Result<Option<RunId>> {
        let described = self.described(instance_id).await?;
        let tag = described.as_ref().and_then(|i| i.tags().iter().find(|tag| tag.key() == Some(tags::RUN_ID)));
        Ok(tag.and_then(|tag| RunId::parse(tag.value()?).ok()))
    }

    async fn terminate(&self, instance_id: &str) -> Result<()> {
        match self.ec2.terminate_instances().instance_ids(instance_id).send().await {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(is_missing_instance) => Ok(()),
            Err(error) => Err(aws_error(SERVICE, "TerminateInstances", error)),
        }
    }

    async fn runner_images(&self) -> Result<Vec<RunnerImage>> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let output = self
                .ec2
                .describe_images()
                .owners("self")
                .filters(Filter::builder().name(format!("tag:{}", tags::PROVISIONER)).values("true").build())
                .filters(
                    Filter::builder().name(format!("tag:{}", tags::KIND)).values(RunKind::RunnerImage.as_str()).build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|error| aws_error(SERVICE, "DescribeImages", error))?;
            found.extend(output.images().iter().filter_map(runner_image));
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    async fn create_image(&self, instance_id: &str, name: &str, image_tags: &[(String, String)]) -> Result<String> {
        let tags: Vec<Tag> = image_tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let output = self
            .ec2
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .description("SlideRule Provisioner runner image: the host tools of the TEST plan")
            .no_reboot(true)
            // Its snapshots too: the sweeper may delete only snapshots tagged as the provisioner's.
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Image).set_tags(Some(tags.clone())).build(),
            )
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Snapshot).set_tags(Some(tags)).build(),
            )
            .send()
            .await
            .map_err(|error| aws_error(SERVICE, "CreateImage", error))?;
        Ok(output.image_id().unwrap_or_default().to_owned())
    }

    async fn retire_image(&self, image: &RunnerImage) -> Result<()> {
        match self.ec2.deregister_image().image_id(&image.id).send().await {
            Ok(_) => {}
            Err(error) if error.as_service_error().is_some_and(is_gone_image) => {}
            Err(error) => return Err(aws_error(SERVICE, "DeregisterImage", error)),
        }
        // A snapshot of a registered image cannot be deleted: hence after.
        for snapshot in &image.snapshots {
            match self.ec2.delete_snapshot().snapshot_id(snapshot).send().await {
                Ok(_) => {}
                Err(error) if error.as_service_error().is_some_and(is_gone_image) => {}
                Err(error) => return Err(aws_error(SERVICE, "DeleteSnapshot", error)),
            }
        }
        Ok(())
    }
}

/// A runner image from what DescribeImages says of it.
fn runner_image(image: &aws_sdk_ec2::types::Image) -> Option<RunnerImage> {
    let tags = image
        .tags()
        .iter()
        .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value().unwrap_or_default().to_owned())))
        .collect();
    let snapshots = image
        .block_device_mappings()
        .iter()
        .filter_map(|mapping| mapping.ebs()?.snapshot_id().map(str::to_owned))
        .collect();
    RunnerImage::from_tags(
        image.image_id()?.to_owned(),
        image.state().map(|state| state.as_str().to_owned()).unwrap_or_default(),
        image.creation_date().and_then(|date| date.parse().ok()),
        &tags,
        snapshots,
    )
}
