//! `cargo xtask dist`: release binaries and the agent's Debian package (being written).

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask dist` is not written yet")
}
