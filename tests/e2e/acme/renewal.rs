//! After the first order: an order killed at each step and finished by the next passes, the
//! renewal a server starts by itself at a third of the lifetime, and `tls renew`'s refusals.

use super::*;

#[test]
fn an_acme_order_killed_at_each_step_is_finished_by_the_next_passes() {
    // A dead orderer's lease expires after 4s; web-2 then waits up to 20s for web-1 (dead, but
    // its report is recent) to acknowledge its answers.
    let group = Group::start("challenge_wait = \"20s\"\nlease = \"4s\"\n", None);
    let (ctx, web1, web2) = (&group.ctx, &group.web1, &group.web2);
    let (orders, stored, logs) = (|| group.orders(), || group.stored(), || group.logs());

    // The first certificate, ordered as usual.
    let services = Services::run(&[web1, web2]);
    group.serve_both();
    drop(services);

    for point in milky_agent::crash::ACME_ORDER {
        let before = installed(web2).unwrap();
        // A new account for each order, so that it has challenges to answer. Pebble reuses an
        // account's valid authorization 1% of the time even at PEBBLE_AUTHZREUSE=0 (it makes a
        // new one only when rand.Intn(100) > the percentage); the order then has no answers to
        // publish and never reaches the crash points. Let's Encrypt reuses them too: the agent
        // handles that (nothing to answer), but this test is about the answers.
        ctx.delete_object("groups/stable/acme/account.toml");
        let load = HttpsLoad::start(group.ports, &group.root);
        assert_success(&ctx.milky(&["tls", "renew", "stable", APP]), "tls renew");
        // web-1 takes the lease and orders; web-2 starts once the answers are out (it
        // acknowledges them, and the CA validates there).
        let orderer = web1
            .command(&["sync"])
            .env(milky_agent::crash::ENV, point)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(
            Duration::from_secs(120),
            &format!("{point}: web-1 publishes the answers"),
            || orders().contains("[apps.shop.challenges]"),
            logs,
        );
        wait_until(
            Duration::from_secs(30),
            &format!("{point}: web-1 serves its answers"),
            || !answered_tokens(web1).is_empty(),
            logs,
        );
        let dead_tokens = answered_tokens(web1);
        let services = Services::run(&[web2]);
        let out = orderer.wait_with_output().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{point}: the order should have been killed there ({}):\n{}",
            out.status,
            stderr(&out)
        );

        // web-2 takes the expired lease, replaces the dead order's answers with its own and
        // stores a new certificate.
        wait_until(
            Duration::from_secs(240),
            &format!("{point}: web-2 finishes the order and installs a new certificate"),
            || {
                let text = orders();
                installed(web2).is_some_and(|c| c != before && stored().contains(c.trim()))
                    && !text.contains("renew_requested")
                    && !text.contains("challenges")
            },
            logs,
        );
        assert!(
            orders().contains("issued_by = \"web-2\""),
            "{point}: {}",
            orders()
        );
        // The pass that stored it read the orders before: the next one drops the answers.
        wait_until(
            Duration::from_secs(60),
            &format!("{point}: web-2 no longer serves the dead order's answers"),
            || {
                answered_tokens(web2)
                    .iter()
                    .all(|t| !dead_tokens.contains(t))
            },
            || format!("{:?} {dead_tokens:?}\n{}", answered_tokens(web2), logs()),
        );
        drop(services);
        let renewed = installed(web2).unwrap();

        // web-1 comes back: installs the same certificate, drops its stale answers.
        let services = Services::run(&[web1]);
        wait_until(
            Duration::from_secs(120),
            &format!("{point}: web-1 installs the new certificate"),
            || installed(web1).as_deref() == Some(renewed.as_str()),
            logs,
        );
        wait_until(
            Duration::from_secs(60),
            &format!("{point}: web-1 removes the dead order's answers"),
            || answered_tokens(web1).is_empty(),
            || format!("{:?}\n{}", answered_tokens(web1), logs()),
        );
        drop(services);
        assert_eq!(installed(web2).as_deref(), Some(renewed.as_str()));
        let (sent, failed) = load.finish();
        assert!(sent > 4, "{point}: the load ran");
        assert_eq!(failed, 0, "{point}: no request failed ({sent} sent)");
    }
}

#[test]
fn an_acme_certificate_is_renewed_by_itself_at_a_third_of_its_lifetime() {
    // Certificates valid 90s: renewed when 30s are left, with no `tls renew`.
    let group = Group::start("challenge_wait = \"60s\"\n", Some(Duration::from_secs(90)));
    let (web1, web2) = (&group.web1, &group.web2);
    let logs = || group.logs();
    let services = Services::run(&[web1, web2]);
    group.serve_both();
    wait_until(
        Duration::from_secs(60),
        "both servers install the first certificate",
        || installed(web1).is_some() && installed(web1) == installed(web2),
        logs,
    );
    let first = installed(web1).unwrap();
    let info = milky_core::tls::certificate_info(&first).unwrap();
    assert!(
        info.not_after - info.not_before <= 90,
        "Pebble issued a short certificate: {info:?}"
    );

    let load = HttpsLoad::start(group.ports, &group.root);
    wait_until(
        Duration::from_secs(240),
        "both servers install a renewed certificate by themselves",
        || {
            [web1, web2]
                .iter()
                .all(|a| installed(a).is_some_and(|c| c != first))
        },
        logs,
    );
    let (sent, failed) = load.finish();
    drop(services);
    assert!(group.pebble.issued() >= 2, "{}", group.pebble.output());
    assert!(
        !group.orders().contains("renew_requested"),
        "{}",
        group.orders()
    );
    let full_logs: String = [web1, web2]
        .iter()
        .map(|a| std::fs::read_to_string(a.root.join("service.log")).unwrap_or_default())
        .collect();
    assert!(
        full_logs.contains("a third of its lifetime is left"),
        "ordered because it was due:\n{}",
        logs()
    );
    assert!(sent > 4, "the load ran");
    assert_eq!(
        failed, 0,
        "no request failed during the renewal ({sent} sent)"
    );
}

#[test]
fn tls_renew_refuses_an_app_the_group_does_not_run_and_warns_when_it_is_not_acme() {
    let ctx = TestContext::new();
    let web1 = Agent::new(&ctx, "stable", "web-1");
    let project = fixture_project(ctx.dir.path(), APP, "v1");
    assert_success(
        &ctx.milky_in(&project, &["init", "--yes", "--name", APP]),
        "init",
    );
    ctx.upload(&project, "stable", "v1");

    let out = ctx.milky(&["tls", "renew", "stable", "ghost"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stable does not run ghost"),
        "{}",
        stderr(&out)
    );
    assert!(
        ctx.object("groups/stable/acme/orders.toml").is_none(),
        "nothing was requested"
    );

    // The app runs without tls: the request is stored, with a warning naming the servers.
    assert_success(&web1.sync(), "sync");
    let out = ctx.milky(&["tls", "renew", "stable", APP]);
    assert_success(&out, "tls renew");
    assert!(
        stderr(&out).contains("warning: shop does not run with tls = \"acme\"")
            && stderr(&out).contains("web-1: none"),
        "{}",
        stderr(&out)
    );
}
