//! What one server downloads from the store in a pass: after the index changed and when
//! nothing changed (benchmarks 7 and 8), counted at a [`Meter`] in front of moto; and the bench
//! bucket's objects read and written with boto3.

use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use super::Bench;
use super::meter::Meter;

/// Bytes one `milky-agent sync` received from the store.
#[derive(Debug, Clone, Copy)]
pub struct Download {
    /// The pass after the index changed.
    pub changed: u64,
    /// The next pass, nothing changed.
    pub idle: u64,
    /// The index's own size when it changed.
    pub index: u64,
}

/// What one server receives from the store in the pass after the index changed and in the idle
/// pass after it. The server belongs to a group the index does not name (it installs nothing) and
/// reads `s3://bench/<prefix>` through a byte-counting forwarder. With `index`, the bench writes
/// it there first; the change is the index with a comment line added.
pub fn agent_download(
    bench: &Bench,
    prefix: &str,
    index: Option<&str>,
) -> anyhow::Result<Download> {
    let key = format!("{prefix}/version.info");
    if let Some(text) = index {
        object(bench, &key, Some(text.as_bytes()))?;
    }
    let meter = Meter::start(&bench.moto.endpoint)?;
    let server = super::servers::Server::new(bench, "no-apps", &format!("meter-{prefix}"), "")?;
    let config = std::fs::read_to_string(server.config())?;
    let config = config
        .replace(
            &format!("store = \"{}\"", bench.store),
            &format!("store = \"s3://bench/{prefix}\""),
        )
        .replace(
            &format!("endpoint_url = \"{}\"", bench.moto.endpoint),
            &format!("endpoint_url = \"{}\"", meter.endpoint),
        );
    anyhow::ensure!(
        config.contains(&meter.endpoint) && config.contains(&format!("s3://bench/{prefix}\"")),
        "the agent's config names no store and endpoint to replace: {config}"
    );
    std::fs::write(server.config(), config)?;
    let sync = || -> anyhow::Result<u64> {
        let before = meter.received();
        let out = Command::new(&bench.agent)
            .arg("--config")
            .arg(server.config())
            .arg("sync")
            .envs(bench.aws_env())
            .env("AWS_ENDPOINT_URL", &meter.endpoint)
            .env_remove("RUST_LOG")
            .output()?;
        if !out.status.success() {
            bail!(
                "milky-agent sync of {prefix}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The forwarder's threads finish copying after the agent hung up.
        std::thread::sleep(Duration::from_millis(200));
        Ok(meter.received() - before)
    };
    // The first pass reads the index and starts nginx; the second has nothing new.
    sync()?;
    sync()?;
    let mut text = object(bench, &key, None)?;
    text.extend_from_slice(b"# changed by the bench\n");
    object(bench, &key, Some(&text))?;
    let changed = sync()?;
    let idle = sync()?;
    server.remove();
    Ok(Download {
        changed,
        idle,
        index: text.len() as u64,
    })
}

/// GETs (`body` None: returns the object) or PUTs an object of the bench bucket, signed, with
/// boto3 (moto refuses anonymous requests for objects).
pub fn object(bench: &Bench, key: &str, body: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
    const SCRIPT: &str = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
if sys.argv[2] == "put":
    s3.put_object(Bucket="bench", Key=sys.argv[3], Body=open(sys.argv[4], "rb").read())
else:
    open(sys.argv[4], "wb").write(s3.get_object(Bucket="bench", Key=sys.argv[3])["Body"].read())
"#;
    let file = bench.work.join("object.tmp");
    if let Some(body) = body {
        std::fs::write(&file, body)?;
    }
    let out = Command::new(bench.tools_python())
        .args(["-c", SCRIPT, &bench.moto.endpoint])
        .arg(if body.is_some() { "put" } else { "get" })
        .arg(key)
        .arg(&file)
        .envs(bench.aws_env())
        .output()?;
    if !out.status.success() {
        bail!("{key}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(std::fs::read(&file)?)
}
