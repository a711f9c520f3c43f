//! A moto server of its own with IAM on: it checks each request's signature and authorizes it
//! against the caller's IAM policy, as S3 does, so "access denied" is tested against real policy
//! evaluation rather than a canned answer. (The shared moto of a test run checks nothing.)
//!
//! moto starts authorizing after `INITIAL_NO_AUTH_ACTION_COUNT` requests: exactly the setup's
//! (bucket, users, policies, keys), made by moto's own Python client.

use std::process::Command;

use milky_dev_support::{Moto, moto_program};

/// An AWS access key pair.
#[derive(Debug, Clone)]
pub struct Keys {
    pub id: String,
    pub secret: String,
}

impl Keys {
    /// The environment that makes the SDK (in our binaries) sign with these keys.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }
}

/// The server; stopped (by its pid) when dropped.
pub struct IamStore {
    _moto: Moto,
    pub endpoint: String,
    /// One key pair per user of the setup, by user name.
    pub users: std::collections::BTreeMap<String, Keys>,
}

/// Requests the setup makes per user: create it, attach its policy, make its key.
const REQUESTS_PER_USER: usize = 3;

impl IamStore {
    /// Starts moto with `bucket` and one IAM user per `(name, policy JSON)`.
    pub fn start(bucket: &str, users: &[(&str, String)]) -> Self {
        let program = moto_program().expect("moto_server is not installed: run `cargo xtask test`");
        let python = program.with_file_name("python3");
        assert!(
            python.exists(),
            "{} has no python3 beside it",
            program.display()
        );
        let moto = Moto::builder(&program)
            .env(
                "INITIAL_NO_AUTH_ACTION_COUNT",
                &(1 + users.len() * REQUESTS_PER_USER).to_string(),
            )
            .start()
            .expect("start moto_server");
        let mut store = IamStore {
            endpoint: moto.endpoint.clone(),
            _moto: moto,
            users: Default::default(),
        };
        let spec: Vec<serde_json::Value> = users
            .iter()
            .map(|(name, policy)| serde_json::json!({"name": name, "policy": policy}))
            .collect();
        let out = Command::new(&python)
            .args(["-c", SETUP, &store.endpoint, bucket])
            .arg(serde_json::to_string(&spec).unwrap())
            .output()
            .expect("run the IAM setup");
        assert!(
            out.status.success(),
            "IAM setup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for (name, _) in users {
            store.users.insert(
                (*name).to_owned(),
                Keys {
                    id: keys[name][0].as_str().unwrap().to_owned(),
                    secret: keys[name][1].as_str().unwrap().to_owned(),
                },
            );
        }
        store
    }
}

const SETUP: &str = r#"
import json, sys
import boto3
endpoint, bucket, users = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
kw = dict(endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup",
          region_name="us-east-1")
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
iam = boto3.client("iam", **kw)
keys = {}
for user in users:
    iam.create_user(UserName=user["name"])
    iam.put_user_policy(UserName=user["name"], PolicyName="milky", PolicyDocument=user["policy"])
    key = iam.create_access_key(UserName=user["name"])["AccessKey"]
    keys[user["name"]] = [key["AccessKeyId"], key["SecretAccessKey"]]
print(json.dumps(keys))
"#;
