//! HTTPS: an app behind a load balancer (`tls = "proxy"`) believes `X-Forwarded-Proto` only
//! from the trusted proxies of the agent's settings. Real store, nginx, Apache mod_wsgi, Django;
//! curl plays the clients, bound to chosen loopback source addresses.

use std::path::PathBuf;
use std::process::Command;

use milky_tests::agent::Agent;
use milky_tests::django::fixture_project;
use milky_tests::*;

const APP: &str = "shop";
const HOST: &str = "shop.test";

/// The fixture with a view that says what Django makes of the request, Django told to trust
/// `X-Forwarded-Proto` (nginx decides whether it came from a trusted proxy), and `[app]` lines
/// (`tls`, `hsts`) added to its milky.toml.
fn tls_project(ctx: &TestContext, app_lines: &str) -> PathBuf {
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    let manifest = project.join("milky.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replacen(
        "[app]\n",
        &format!("[app]\nserver_names = [\"{HOST}\"]\n{app_lines}\n"),
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

#[test]
fn behind_a_proxy_the_scheme_comes_from_trusted_addresses_only() {
    let ctx = TestContext::new();
    let project = tls_project(&ctx, "tls = \"proxy\"");
    ctx.upload(&project, "stable", "v1");
    // The load balancer is 127.0.0.2; every other address is a client straight from the net.
    let server = Agent::new(&ctx, "stable", "web-1");
    add_web_settings(&server, "trusted_proxies = [\"127.0.0.2/32\"]");
    assert_success(&server.sync(), "the first pass");
    let host = format!("Host: {HOST}");
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
}
