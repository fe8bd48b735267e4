//! The sweeper's daily recount of each profile's books from the records (every stack, the
//! month's history, every run record: the one scan of the table), which corrects a difference so
//! a lost write of the books drifts them for a day at most. The arithmetic is `budget.rs`'s.

use serde::Serialize;

use super::budget::{cents, recount, usd, SpendSources};
use super::survey::Operations;
use crate::domain::books::{Books, SpendEntry, JUST_BEGUN};
use crate::domain::history::month_of;
use crate::domain::resource_names::STACK_NAME_PREFIX;
use crate::error::Result;

/// A recount of a profile's books by the sweeper.
#[derive(Debug, Clone, Serialize)]
pub struct Recount {
    pub profile: String,
    pub result: String,
    /// Whether the books differed from the records, and were corrected.
    pub corrected: bool,
    pub ok: bool,
}

impl Operations {
    /// Recounts the books of `profiles` from the records and corrects them. The records are read
    /// after the books, so a change of the books meanwhile (then that profile's recount is
    /// skipped, and the next sweep's counts) cannot be lost. The one full read of the table and
    /// of the month's history, for all of them.
    pub async fn recount_books(&self, profiles: &[String]) -> Vec<Recount> {
        let recount = |profile: &String, result: Result<(bool, String)>| {
            let (ok, corrected, result) = match result {
                Ok((corrected, result)) => (true, corrected, result),
                Err(error) => (false, false, format!("failed: {error} ({})", error.code())),
            };
            Recount { profile: profile.clone(), result, corrected, ok }
        };
        let read = futures::future::join_all(profiles.iter().map(|p| self.provisioner.ports.spend.books(p))).await;
        let recounted = match self.recounted().await {
            Ok(recounted) => recounted,
            Err(error) => return profiles.iter().map(|profile| recount(profile, Err(error.clone()))).collect(),
        };
        let mut recounts = Vec::new();
        for (profile, read) in profiles.iter().zip(read) {
            let fresh = recounted.iter().find(|(name, _)| name == profile).map(|(_, books)| books.clone());
            let outcome = match (read, fresh) {
                (Ok(read), Some(fresh)) => self.correct(profile, read, fresh).await,
                (Ok(_), None) => Ok((false, "no such profile in the catalog".into())),
                (Err(error), _) => Err(error),
            };
            recounts.push(recount(profile, outcome));
        }
        recounts
    }

    /// Every profile's books recounted from the records as they are now.
    async fn recounted(&self) -> Result<Vec<(String, Books)>> {
        let (provisioner, runner) = (&self.provisioner, &self.runner);
        let now = provisioner.ports.clock.now();
        let month = month_of(now);
        let (stacks, history, runs) = tokio::join!(
            provisioner.ports.stacks.list(STACK_NAME_PREFIX),
            provisioner.ports.history.month(&month),
            runner.ports.runs.list(),
        );
        let (stacks, history, runs) = (stacks?, history?, runs?);
        Ok(recount(&provisioner.catalog, &SpendSources { now, stacks: &stacks, history: &history, runs: &runs }))
    }

    /// Replaces `read` with `recounted` unless the books changed since they were read: whether it
    /// corrected a difference, and what it found.
    async fn correct(&self, profile: &str, read: Books, mut recounted: Books) -> Result<(bool, String)> {
        let now = self.provisioner.ports.clock.now();
        recounted.settled = read.clone().at(now).settled;
        let unrecorded = |entry: &&SpendEntry| recounted.entries.iter().all(|counted| counted.id != entry.id);
        let just_begun: Vec<SpendEntry> =
            read.entries.iter().filter(|entry| now - entry.since < JUST_BEGUN).filter(unrecorded).cloned().collect();
        recounted.entries.extend(just_begun);
        let (kept, counted) = (read.spent(now), recounted.spent(now));
        let kept_usd = cents(kept.clusters_usd + kept.runs_usd);
        let counted_usd = cents(counted.clusters_usd + counted.runs_usd);
        let unchanged = |books: Books| (books == read).then(|| recounted.clone());
        if !self.provisioner.ports.spend.change(profile, &unchanged).await? {
            let skipped = "skipped: the books changed while they were recounted; the next sweep recounts them";
            return Ok((false, skipped.into()));
        }
        let difference = cents(counted_usd - kept_usd);
        if difference.abs() < 0.01 {
            return Ok((false, format!("the books agree with the records ({} USD this month)", usd(counted_usd))));
        }
        tracing::warn!(profile, kept_usd, counted_usd, difference, "the books differed from the records; corrected");
        let found = format!(
            "corrected: the books said {} USD this month, the records {} USD (a difference of {} USD)",
            usd(kept_usd),
            usd(counted_usd),
            usd(difference)
        );
        Ok((true, found))
    }
}
