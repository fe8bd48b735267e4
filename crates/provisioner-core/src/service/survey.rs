//! What `status` and `sweep` both start from: one survey of the account, read together: four
//! listing calls (the cluster stacks, the destroy schedules, the instances of runs, the runner
//! images), the live runs and the last ended ones (items only they are in, then their records),
//! one read of each capped profile's slots and one of each profile's books; then the records of
//! the runs an instance or a slot names that were not among them. Nothing it reads grows with
//! the history kept. The sweeper's rules are in
//! `sweeper.rs`, the report in `status.rs`.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::budget::ProfileSpend;
use super::run::Runner;
use super::Provisioner;
use crate::catalog::Catalog;
use crate::domain::books::Books;
use crate::domain::launch_log::LaunchEvent;
use crate::domain::resource_names::{scheduled_cluster, DESTROY_SCHEDULE_PREFIX, STACK_NAME_PREFIX};
use crate::domain::{tags, RunRecord, RunnerImage};
use crate::domain::{RunId, RunKind};
use crate::error::Result;
use crate::ports::{EndedRuns, ScheduleEntry, Slots, StackSnapshot, TaggedInstance};

/// How many ended runs status lists.
pub const RECENT_RUNS: usize = 10;

/// Both sides of the provisioner: the sweeper destroys through the provisioner and resumes runs
/// through the runner.
#[derive(Clone)]
pub struct Operations {
    pub provisioner: Provisioner,
    pub runner: Runner,
}

/// What the account holds, as the listing calls saw it.
#[derive(Debug, Clone)]
pub struct Survey {
    pub now: Timestamp,
    pub stacks: Vec<StackSnapshot>,
    pub schedules: Vec<ScheduleEntry>,
    /// The live runs (not ended, or holding their instance), and the runs an instance or a slot
    /// names.
    pub runs: Vec<RunRecord>,
    /// The last ended runs ([`RECENT_RUNS`]), the latest end first; and the last image run.
    pub recent: Vec<RunRecord>,
    pub last_image_run: Option<RunRecord>,
    pub instances: Vec<TaggedInstance>,
    /// Each profile's books, in catalog order.
    pub books: Vec<(String, Books)>,
    pub runner_images: Vec<RunnerImage>,
    /// Every capped profile's slots of each kind, and the runs holding them.
    pub slots: Vec<(Slots, Vec<RunId>)>,
    /// Failed launches, interruptions and boot times of the last 7 days (none when unreadable).
    pub launch_events: Vec<LaunchEvent>,
}

impl Survey {
    /// When the first destroy schedule of `cluster` fires.
    pub fn first_destroy(&self, cluster: &str) -> Option<Timestamp> {
        self.first_destroy_schedule(cluster).map(|s| s.at)
    }

    /// Every profile's estimated spend this month, against its budget.
    pub fn spend(&self, catalog: &Catalog) -> Vec<ProfileSpend> {
        let books = |name: &str| self.books.iter().find(|(profile, _)| profile == name).map(|(_, books)| books);
        let empty = Books::default();
        let spend = |profile| ProfileSpend::of_books(profile, books(&profile.name).unwrap_or(&empty), self.now);
        catalog.profiles().iter().map(spend).collect()
    }

    /// The first destroy schedule of `cluster`.
    pub fn first_destroy_schedule(&self, cluster: &str) -> Option<&ScheduleEntry> {
        self.schedules.iter().filter(|s| scheduled_cluster(&s.name) == Some(cluster)).min_by_key(|s| s.at)
    }
}

impl Operations {
    /// Both sides, as status and the sweeper use them.
    pub fn new(provisioner: Provisioner, runner: Runner) -> Operations {
        Operations { provisioner, runner }
    }

    /// The survey of everything.
    pub async fn survey(&self) -> Result<Survey> {
        self.survey_of(&EndedRuns::default()).await
    }

    /// The survey, its last ended runs those `recent` keeps.
    pub async fn survey_of(&self, recent: &EndedRuns) -> Result<Survey> {
        let now = self.provisioner.ports.clock.now();
        let runs = &self.runner.ports.runs;
        let (ended, last_image_run) =
            tokio::join!(runs.ended(RECENT_RUNS, recent, now), runs.last_ended(RunKind::RunnerImage));
        let (stacks, schedules, live, instances, books, runner_images, slots, launch_events) = tokio::join!(
            self.provisioner.ports.stacks.list(STACK_NAME_PREFIX),
            self.provisioner.ports.schedules.list(DESTROY_SCHEDULE_PREFIX),
            runs.live(),
            self.runner.ports.instances.of_runs(),
            self.books(),
            self.runner.ports.instances.runner_images(),
            self.slots(now),
            self.runner.ports.launch_log.recent(now),
        );
        // What launches taught is shown, never needed: an unreadable log empties it.
        let launch_events = launch_events.unwrap_or_else(|error| {
            tracing::warn!(%error, "could not read the launch log");
            Vec::new()
        });
        let (slots, instances) = (slots?, instances?);
        let runs = self.with_named_runs(live?, &instances, &slots).await?;
        Ok(Survey {
            slots,
            now,
            books: books?,
            stacks: stacks?,
            schedules: schedules?,
            runs,
            recent: ended?,
            last_image_run: last_image_run?,
            instances,
            runner_images: runner_images?,
            launch_events,
        })
    }

    /// `live` and the records of the runs an instance or a slot names that are not among them
    /// (one read each: an instance of an ended run, a slot its run did not free).
    async fn with_named_runs(
        &self,
        mut runs: Vec<RunRecord>,
        instances: &[TaggedInstance],
        slots: &[(Slots, Vec<RunId>)],
    ) -> Result<Vec<RunRecord>> {
        let known: BTreeSet<String> = runs.iter().map(|run| run.run_id.to_string()).collect();
        let tagged = instances.iter().filter_map(|instance| RunId::parse(instance.tag(tags::RUN_ID)?).ok());
        let holders = slots.iter().flat_map(|(_, holders)| holders.iter().cloned());
        let mut named: Vec<RunId> = tagged.chain(holders).filter(|id| !known.contains(id.as_str())).collect();
        named.sort_by_key(ToString::to_string);
        named.dedup();
        let reads = named.iter().map(|id| self.runner.ports.runs.get(id));
        runs.extend(futures::future::try_join_all(reads).await?.into_iter().flatten());
        Ok(runs)
    }

    /// Each profile's books: one read each.
    async fn books(&self) -> Result<Vec<(String, Books)>> {
        let spend = &self.provisioner.ports.spend;
        let reads = self
            .provisioner
            .catalog
            .profiles()
            .iter()
            .map(|profile| async move { Ok((profile.name.clone(), spend.books(&profile.name).await?)) });
        futures::future::try_join_all(reads).await
    }

    /// Each capped profile's slots of each kind, with their holders: one read each.
    async fn slots(&self, now: jiff::Timestamp) -> Result<Vec<(Slots, Vec<RunId>)>> {
        let capped = self.runner.catalog.profiles().iter().flat_map(|profile| {
            RunKind::ALL.into_iter().filter_map(|kind| {
                let cap = profile.max_concurrent_runs.of(kind)?;
                Some(Slots { profile: profile.name.clone(), kind, cap })
            })
        });
        let reads = capped.map(|slots| async move {
            let held = self.runner.ports.runs.slots_held(&slots, now).await?;
            Ok((slots, held))
        });
        futures::future::try_join_all(reads).await
    }
}
