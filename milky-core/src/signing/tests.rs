use super::*;

fn app(s: &str) -> AppName {
    s.parse().unwrap()
}
fn v(s: &str) -> Version {
    s.parse().unwrap()
}
fn entry() -> PackageEntry {
    PackageEntry {
        sha256: "ab".repeat(32),
        size: 4096,
        uploaded: "2026-11-25T04:25:00Z".into(),
        signature: None,
    }
}
fn signed(key: &SecretKey, app_name: &str, version: &str) -> PackageEntry {
    let mut e = entry();
    e.signature = Some(key.sign_entry(&app(app_name), &v(version), &e));
    e
}
fn trusting(keys: &[&SecretKey]) -> TrustedKeys {
    TrustedKeys::new(keys.iter().map(|k| k.public()).collect())
}

#[test]
fn a_signed_entry_verifies_and_names_its_key() {
    let key = SecretKey::generate().unwrap();
    let other = SecretKey::generate().unwrap();
    let e = signed(&key, "shop", "v1");
    let signature = e.signature.clone().unwrap();
    assert!(signature.starts_with(&format!("{}:", key.public().id())));
    assert_eq!(signer(&e), Some(key.public().id()));
    assert_eq!(
        trusting(&[&other, &key])
            .verify_entry(&app("shop"), &v("v1"), &e)
            .unwrap(),
        key.public().id()
    );
    // Ed25519 is deterministic: signing again gives the same text.
    assert_eq!(key.sign_entry(&app("shop"), &v("v1"), &entry()), signature);
}

#[test]
fn unsigned_and_untrusted_entries_are_refused_with_the_reason() {
    let key = SecretKey::generate().unwrap();
    let other = SecretKey::generate().unwrap();
    let trusted = trusting(&[&key]);
    let err = trusted
        .verify_entry(&app("shop"), &v("v1"), &entry())
        .unwrap_err();
    assert!(matches!(err, VerifyError::Unsigned { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "shop v1 is unsigned; this server runs only packages signed by a trusted key ({})",
            key.public().id()
        )
    );
    let err = trusted
        .verify_entry(&app("shop"), &v("v1"), &signed(&other, "shop", "v1"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "shop v1 is not signed by a trusted key (signed by {}; trusted here: {})",
            other.public().id(),
            key.public().id()
        )
    );
}

#[test]
fn every_signed_field_is_bound() {
    let key = SecretKey::generate().unwrap();
    let trusted = trusting(&[&key]);
    let good = signed(&key, "shop", "v1");
    let mismatch = |a: &str, ver: &str, e: &PackageEntry| {
        let err = trusted.verify_entry(&app(a), &v(ver), e).unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
    };
    // The entry moved to another app or version.
    mismatch("blog", "v1", &good);
    mismatch("shop", "v2", &good);
    // The entry pointed at another package.
    let mut e = good.clone();
    e.sha256 = "cd".repeat(32);
    mismatch("shop", "v1", &e);
    let mut e = good.clone();
    e.size += 1;
    mismatch("shop", "v1", &e);
    // Upper case hex is another text, never what was signed.
    let mut e = good.clone();
    e.sha256 = e.sha256.to_uppercase();
    mismatch("shop", "v1", &e);
    // The upload time is not signed: it is informational.
    let mut e = good.clone();
    e.uploaded = "later".into();
    trusted.verify_entry(&app("shop"), &v("v1"), &e).unwrap();
    // A flipped bit in the signature.
    let mut e = good.clone();
    let (id, sig) = good.signature.as_deref().unwrap().split_once(':').unwrap();
    let mut bytes = BASE64.decode(sig).unwrap();
    bytes[10] ^= 1;
    e.signature = Some(format!("{id}:{}", BASE64.encode(bytes)));
    mismatch("shop", "v1", &e);
}

fn group(s: &str) -> GroupName {
    s.parse().unwrap()
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_env_signature_binds_group_app_generation_and_every_variable() {
    let key = SecretKey::generate().unwrap();
    let trusted = trusting(&[&key]);
    let env = vars(&[("SECRET_KEY", "s3cret"), ("DEBUG", "0")]);
    let signature = key.sign_env(&group("stable"), &app("shop"), 3, &env);
    let verify = |g: &str, a: &str, generation: u64, v: &BTreeMap<String, String>| {
        trusted.verify_env(&group(g), &app(a), generation, v, Some(&signature))
    };
    assert_eq!(
        verify("stable", "shop", 3, &env).unwrap(),
        key.public().id()
    );
    let mut changed = env.clone();
    changed.insert("DEBUG".into(), "1".into());
    let mut added = env.clone();
    added.insert("DATABASE_URL".into(), "postgres://evil".into());
    let mut removed = env.clone();
    removed.remove("DEBUG");
    // A value that would read as two variables if the message were not escaped.
    let smuggled = vars(&[("SECRET_KEY", "s3cret\",\"DEBUG\":\"0")]);
    for (g, a, generation, v) in [
        ("unstable", "shop", 3, &env),
        ("stable", "blog", 3, &env),
        ("stable", "shop", 2, &env),
        ("stable", "shop", 3, &changed),
        ("stable", "shop", 3, &added),
        ("stable", "shop", 3, &removed),
        ("stable", "shop", 3, &smuggled),
    ] {
        let err = verify(g, a, generation, v).unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
    }
    let err = verify("unstable", "shop", 3, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the env of shop in unstable: the signature by key {} does not match the env (its group, app, generation or variables were changed after signing); refused",
            key.public().id()
        )
    );
    let err = trusted
        .verify_env(&group("stable"), &app("shop"), 3, &env, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the env of shop in stable is unsigned; this server runs only envs signed by a trusted key ({})",
            key.public().id()
        )
    );
    // A package signature never passes for an env's.
    let entry_signature = key.sign_entry(&app("shop"), &v("v1"), &entry());
    let err = trusted
        .verify_env(
            &group("stable"),
            &app("shop"),
            3,
            &env,
            Some(&entry_signature),
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
}

#[test]
fn malformed_signatures_are_refused() {
    let key = SecretKey::generate().unwrap();
    let trusted = trusting(&[&key]);
    for bad in [
        "",
        "nocolon",
        "xyz:AAAA",
        &format!("{}:AAAA", key.public().id()),
    ] {
        let mut e = entry();
        e.signature = Some(bad.into());
        let err = trusted
            .verify_entry(&app("shop"), &v("v1"), &e)
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::Malformed { .. }),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn keys_round_trip_through_their_text_forms() {
    let key = SecretKey::generate().unwrap();
    let path = Path::new("/keys/signing.key");
    let text = key.to_file_text();
    assert!(
        text.starts_with("# MilkyWhite package signing key"),
        "{text}"
    );
    let read = SecretKey::parse_file(&text, path).unwrap();
    assert_eq!(read.public(), key.public());
    let line = key.public().to_string();
    assert!(line.starts_with("milky-ed25519 "), "{line}");
    assert_eq!(line.parse::<PublicKey>().unwrap(), key.public());
    // A trailing comment is allowed.
    assert_eq!(
        format!("{line} ops@build-1").parse::<PublicKey>().unwrap(),
        key.public()
    );
    let file = format!("# production\n\n{line}\n  # old key below\n{}\n", {
        SecretKey::generate().unwrap().public()
    });
    let keys = TrustedKeys::parse_file(&file, Path::new("/etc/milky/trusted_keys")).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], key.public());
}

#[test]
fn bad_keys_are_refused_with_clear_reasons() {
    let key = SecretKey::generate().unwrap();
    let other = SecretKey::generate().unwrap();
    let line = key.public().to_string();
    let words: Vec<&str> = line.split(' ').collect();
    let cases = [
        (String::new(), "the line is empty"),
        ("ssh-ed25519 AAAA".into(), "starts with \"ssh-ed25519\""),
        (format!("{PUBLIC_TAG} {}", words[1]), "the key is missing"),
        (format!("{PUBLIC_TAG} zz {}", words[2]), "not 16 hex digits"),
        (
            format!("{PUBLIC_TAG} {} AAAA", words[1]),
            "not 32 bytes of base64",
        ),
        (
            format!("{PUBLIC_TAG} {} {}", other.public().id(), words[2]),
            "does not belong to this key",
        ),
        (
            key.to_file_text().lines().last().unwrap().to_owned(),
            "this is a secret key",
        ),
    ];
    for (text, why) in cases {
        let err = text.parse::<PublicKey>().unwrap_err().to_string();
        assert!(err.contains(why), "{text:?}: {err}");
    }
    let err = TrustedKeys::parse_file(
        &format!("{line}\n# fine\nnonsense\n"),
        Path::new("/etc/milky/trusted_keys"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("/etc/milky/trusted_keys line 3: not a MilkyWhite public key"),
        "{err}"
    );

    let path = Path::new("/keys/signing.key");
    let secret = key.to_file_text();
    let cases = [
        ("# only a comment\n".to_owned(), "holds no key line"),
        (line.clone(), "this is a public key"),
        (format!("{secret}{secret}"), "more than one key line"),
        (
            secret.replace(
                &key.public().id().to_string(),
                &other.public().id().to_string(),
            ),
            "does not belong to this key",
        ),
        (
            format!("{SECRET_TAG} {} AAAA\n", key.public().id()),
            "not 32 bytes of base64",
        ),
    ];
    for (text, why) in cases {
        let err = SecretKey::parse_file(&text, path).unwrap_err().to_string();
        assert!(
            err.starts_with("/keys/signing.key is not a MilkyWhite secret key"),
            "{err}"
        );
        assert!(err.contains(why), "{text:?}: {err}");
    }
}
