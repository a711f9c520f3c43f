//! Which groups exist, so that a mistyped group name is an error that lists the real ones, and
//! a new group is made only on purpose (`--new-group`, or a yes at the terminal).
//!
//! A group exists once the index names it (it runs or ran an app, or has an env) or the store
//! holds something of it (a server's report, an env object): so servers installed for a group
//! make it known before anything is uploaded to it.

use std::collections::BTreeSet;
use std::io::IsTerminal;

use clap::Args;
use milky_core::{GroupName, Index, Store};

use crate::exit::user_error;

/// The flag of every command that can create a group.
#[derive(Debug, Args, Clone, Default)]
pub struct NewGroupArgs {
    /// Create the group if it does not exist yet (without it, an unknown group is an error, or
    /// a question on a terminal)
    #[arg(long)]
    pub new_group: bool,
}

/// Every group the index or the store knows of.
pub async fn known(store: &Store, index: Option<&Index>) -> anyhow::Result<BTreeSet<GroupName>> {
    let mut groups = index.map(Index::known_groups).unwrap_or_default();
    for name in store.list_dirs(milky_core::layout::GROUPS).await? {
        if let Ok(group) = name.parse() {
            groups.insert(group);
        }
    }
    Ok(groups)
}

/// An error unless `group` exists: for commands that only read or change what a group has.
pub async fn require(
    store: &Store,
    index: Option<&Index>,
    group: &GroupName,
) -> anyhow::Result<()> {
    // The index names most groups: no listing then (a store may walk every key to list).
    if index.is_some_and(|index| index.known_groups().contains(group)) {
        return Ok(());
    }
    let groups = known(store, index).await?;
    if groups.contains(group) {
        return Ok(());
    }
    Err(user_error(format!(
        "there is no group {group} ({})",
        listing(&groups)
    )))
}

/// Lets a command write to `group`: an existing group always, a new one only with
/// `--new-group` or when the user says yes at a terminal.
pub async fn allow_new(
    store: &Store,
    index: Option<&Index>,
    group: &GroupName,
    args: &NewGroupArgs,
) -> anyhow::Result<()> {
    if args.new_group {
        return Ok(());
    }
    let groups = known(store, index).await?;
    if groups.contains(group) {
        return Ok(());
    }
    let listed = listing(&groups);
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let create = dialoguer::Confirm::new()
            .with_prompt(format!(
                "There is no group {group} yet ({listed}). Create it?"
            ))
            .default(false)
            .interact()?;
        return if create {
            Ok(())
        } else {
            Err(user_error(format!("not creating group {group}")))
        };
    }
    Err(user_error(format!(
        "there is no group {group} yet ({listed}); pass --new-group to create it"
    )))
}

/// "the groups are: a, b" or "there are no groups yet".
fn listing(groups: &BTreeSet<GroupName>) -> String {
    if groups.is_empty() {
        return "the store has no groups yet".into();
    }
    let names: Vec<&str> = groups.iter().map(GroupName::as_str).collect();
    format!("the groups are: {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_names_every_group_or_says_there_are_none() {
        assert_eq!(listing(&BTreeSet::new()), "the store has no groups yet");
        let groups = ["unstable", "stable"]
            .into_iter()
            .map(|g| g.parse().unwrap())
            .collect();
        assert_eq!(listing(&groups), "the groups are: stable, unstable");
    }
}
