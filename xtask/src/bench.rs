//! `cargo xtask bench`: benchmarks against baselines run side by side (being written).

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask bench` is not written yet")
}
