//! HTTPS on one server with two apps: one behind a load balancer (`tls = "proxy"`), which
//! believes `X-Forwarded-Proto` only from the trusted proxies of the agent's settings, and one
//! with its own certificate (`tls = "provided"`, `cargo milky tls set`), refused before upload
//! when its key does not match. Real store, nginx, Apache mod_wsgi, Django; curl plays the
//! clients, bound to chosen loopback source addresses, trusting a test CA made here.

use std::path::PathBuf;
use std::process::Command;

use milky_tests::agent::Agent;
use milky_tests::django::fixture_project;
use milky_tests::*;

/// The app behind a load balancer, and the one with its own certificate.
const PROXIED: (&str, &str) = ("shop", "shop.test");
const PROVIDED: (&str, &str) = ("vault", "vault.test");

/// The fixture with a view that says what Django makes of the request, Django told to trust
/// `X-Forwarded-Proto` (nginx decides whether it came from a trusted proxy), and `[app]` lines
/// (`tls`, `hsts`) added to its milky.toml.
fn tls_project(ctx: &TestContext, (app, host): (&str, &str), app_lines: &str) -> PathBuf {
    let project = fixture_project(ctx.dir.path(), app, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", app]),
        "init",
    );
    let manifest = project.join("milky.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replacen(
        "[app]\n",
        &format!("[app]\nserver_names = [\"{host}\"]\n{app_lines}\n"),
        1,
    );
    write(&manifest, &text);
    let settings = project.join("mysite/settings.py");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str("\nSECURE_PROXY_SSL_HEADER = (\"HTTP_X_FORWARDED_PROTO\", \"https\")\n");
    write(&settings, &text);
    let views = project.join("pages/views.py");
    let mut text = std::fs::read_to_string(&views).unwrap();
    text.push_str(
        "\n\ndef scheme(request):\n    \
         return HttpResponse(f\"secure={request.is_secure()} client={request.META.get('HTTP_X_REAL_IP')}\\n\", content_type=\"text/plain\")\n",
    );
    write(&views, &text);
    let urls = project.join("mysite/urls.py");
    let text = std::fs::read_to_string(&urls)
        .unwrap()
        .replace("]\n", "    path(\"scheme\", views.scheme),\n]\n");
    write(&urls, &text);
    project
}

/// curl's answer (status line, headers and body) to `args`, from the loopback address `source`.
fn curl(source: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--include", "--max-time", "20"])
        .args(["--interface", source])
        .args(args)
        .output()
        .expect("run curl (apt install curl)");
    assert_success(&out, &format!("curl {args:?}"));
    stdout(&out)
}

/// Adds `lines` to the `[web]` table of the agent's settings.
fn add_web_settings(agent: &Agent, lines: &str) {
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let text = text.replacen("[web]\n", &format!("[web]\n{lines}\n"), 1);
    write(&agent.config, &text);
}

fn scheme_url(agent: &Agent) -> String {
    format!("http://127.0.0.1:{}/scheme", agent.front)
}

/// A CA, and a certificate for `names` it signs, with its key: (CA PEM, chain PEM, key PEM).
fn test_ca_and_certificate(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "MilkyWhite test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn https_apps_behind_a_proxy_and_with_their_own_certificate() {
    let ctx = TestContext::new();
    let dir = ctx.dir.path();
    let (ca, chain, key) = test_ca_and_certificate(&[PROVIDED.1]);
    let (_, _, foreign_key) = test_ca_and_certificate(&[PROVIDED.1]);
    for (name, text) in [
        ("ca.pem", &ca),
        ("chain.pem", &chain),
        ("key.pem", &key),
        ("foreign-key.pem", &foreign_key),
    ] {
        write(&dir.join(name), text);
    }
    let proxied = tls_project(&ctx, PROXIED, "tls = \"proxy\"");
    let provided = tls_project(&ctx, PROVIDED, "tls = \"provided\"\nhsts = true");
    ctx.upload(&proxied, "stable", "v1");
    ctx.upload(&provided, "stable", "v1");

    // A key that is not the certificate's is refused before anything is stored.
    let tls_key = format!("groups/stable/tls/{}.toml", PROVIDED.0);
    let set = |key_file: &str| {
        let (cert, key) = (dir.join("chain.pem"), dir.join(key_file));
        let args = ["tls", "set", "stable", PROVIDED.0, "--cert"];
        ctx.milky_in(
            &provided,
            &[
                &args[..],
                &[cert.to_str().unwrap(), "--key", key.to_str().unwrap()],
            ]
            .concat(),
        )
    };
    assert_failure(
        &set("foreign-key.pem"),
        2,
        "does not belong to the certificate",
    );
    assert_eq!(ctx.object(&tls_key), None, "nothing stored");
    assert_success(&set("key.pem"), "tls set with the certificate's key");
    assert!(ctx.object(&tls_key).is_some());

    // The load balancer is 127.0.0.2; every other address is a client straight from the net.
    let server = Agent::new(&ctx, "stable", "web-1");
    let https_port = milky_dev_support::Ports::reserve(1).expect("a port for HTTPS");
    add_web_settings(
        &server,
        &format!(
            "trusted_proxies = [\"127.0.0.2/32\"]\nhttps_listen = \"127.0.0.1:{}\"",
            https_port.first()
        ),
    );
    assert_success(&server.sync(), "the first pass");

    let host = format!("Host: {}", PROXIED.1);
    let forwarded = [
        "-H",
        host.as_str(),
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "X-Forwarded-For: 198.51.100.7",
    ];
    let url = scheme_url(&server);
    let from_proxy = curl("127.0.0.2", &[&forwarded[..], &[url.as_str()]].concat());
    assert!(
        from_proxy.contains("secure=True client=198.51.100.7"),
        "a trusted proxy's scheme and client address reach Django:\n{from_proxy}"
    );
    let from_client = curl("127.0.0.3", &[&forwarded[..], &[url.as_str()]].concat());
    assert!(
        from_client.contains("secure=False client=127.0.0.3"),
        "a client that says https itself is still on http:\n{from_client}"
    );
    let plain = curl("127.0.0.2", &["-H", &host, &url]);
    assert!(plain.contains("secure=False"), "{plain}");

    // The app with its own certificate: HTTPS with it, HTTP sent there, challenges answered.
    let port = https_port.first();
    let name = PROVIDED.1;
    let resolve = format!("{name}:{port}:127.0.0.1");
    let ca_file = dir.join("ca.pem");
    let https_url = format!("https://{name}:{port}/scheme");
    let secure = curl(
        "127.0.0.1",
        &[
            "--cacert",
            ca_file.to_str().unwrap(),
            "--resolve",
            &resolve,
            &https_url,
        ],
    );
    assert!(secure.contains("secure=True"), "{secure}");
    assert!(
        secure
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "HSTS, as the manifest asks:\n{secure}"
    );
    let vault_host = format!("Host: {name}");
    let redirect = curl(
        "127.0.0.1",
        &[
            "-H",
            &vault_host,
            &format!("http://127.0.0.1:{}/scheme?a=1", server.front),
        ],
    );
    assert!(
        redirect.starts_with("HTTP/1.1 301")
            && redirect.contains(&format!("Location: https://{name}:{port}/scheme?a=1")),
        "{redirect}"
    );
    write(
        &server.root.join("web/nginx/acme-challenge/tok-1"),
        "tok-1.thumbprint",
    );
    let challenge = curl(
        "127.0.0.1",
        &[
            "-H",
            &vault_host,
            &format!(
                "http://127.0.0.1:{}/.well-known/acme-challenge/tok-1",
                server.front
            ),
        ],
    );
    assert!(
        challenge.starts_with("HTTP/1.1 200") && challenge.ends_with("tok-1.thumbprint"),
        "{challenge}"
    );
    let key_mode = std::fs::metadata(
        server
            .root
            .join(format!("web/nginx/tls/{}.key", PROVIDED.0)),
    )
    .unwrap()
    .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );
    // Status shows each app's HTTPS per server: mode, names, expiry.
    let status = ctx.milky(&["status", "stable", "--json"]);
    assert_success(&status, "status --json");
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let vault = &status["stable"]["apps"][PROVIDED.0]["tls"][0];
    assert_eq!(vault["host"], "web-1", "{status:#}");
    assert_eq!(vault["mode"], "provided", "{status:#}");
    assert_eq!(
        vault["names"],
        serde_json::json!([PROVIDED.1]),
        "{status:#}"
    );
    assert!(vault["expires"].is_string(), "{status:#}");
    assert!(vault.get("warning").is_none(), "{status:#}");
    assert_eq!(
        status["stable"]["apps"][PROXIED.0]["tls"][0]["mode"], "proxy",
        "{status:#}"
    );
    let text = stdout(&ctx.milky(&["status", "stable"]));
    assert!(
        text.contains(&format!("tls provided on web-1: {}", PROVIDED.1)),
        "{text}"
    );
    // An unknown name over HTTPS gets no certificate at all.
    let unknown = Command::new("curl")
        .args([
            "--silent",
            "--insecure",
            "--resolve",
            &format!("other.test:{port}:127.0.0.1"),
        ])
        .arg(format!("https://other.test:{port}/"))
        .output()
        .unwrap();
    assert!(!unknown.status.success(), "the handshake is refused");
}
