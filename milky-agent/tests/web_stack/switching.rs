//! Blue/green switches: under load, without reloading nginx, and never to an unhealthy release.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use milky_agent::web::{Slot, WebError, WebStack};

use crate::support::{
    TestStack, assert_serves, keep_alive_get, nginx_workers, shared_release, site,
};

/// (b) Blue/green switches under load through nginx: no request fails.
#[test]
fn blue_green_switches_under_load_fail_no_request() {
    let t = TestStack::new(&["shop"]);
    let v1 = site("shop", "shop.test", &shared_release("v1"));
    let v2 = site("shop", "shop.test", &shared_release("v2"));
    t.deploy(&v1, Slot::Blue, "v1");
    assert_serves(t.front(), "shop.test", "v1");
    // A client connection kept alive across all the switches below.
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", t.front())).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (status, body) = keep_alive_get(&mut kept, "shop.test");
    assert!(
        status.ends_with("200 OK") && body.contains("v1"),
        "{status} {body}"
    );
    let workers = nginx_workers(&t.stack);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let front = t.front();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                // Keep-alive, as browsers and load balancers do.
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let url = format!("http://127.0.0.1:{front}/");
                    match agent.get(&url).set("Host", "shop.test").call() {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.into_string();
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("HTTP {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let steps = [
        (&v2, Slot::Green, "v2"),
        (&v1, Slot::Blue, "v1"),
        (&v2, Slot::Green, "v2"),
        (&v1, Slot::Blue, "v1"),
        (&v2, Slot::Green, "v2"),
    ];
    for (site, slot, version) in steps {
        let t0 = Instant::now();
        t.deploy(site, slot, version);
        let switched = t0.elapsed();
        t.stack
            .stop_slot("shop", slot.other())
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "switch to {slot} ({version}): deploy {switched:?}, total {:?}",
            t0.elapsed()
        );
        assert!(!t.stack.is_running("shop", slot.other()).unwrap());
        // The connection opened before the first switch gets each new release. Using it after
        // every switch also keeps it from idling past nginx's keep-alive timeout (75 s) on a
        // busy machine, where the five switches can take longer than that.
        let (status, body) = keep_alive_get(&mut kept, "shop.test");
        assert!(
            status.ends_with("200 OK") && body.contains(version),
            "after the switch to {version}: {status} {body}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    eprintln!(
        "load during {} switches in {:?}: {} requests ok, {} failed {:?}",
        steps.len(),
        started.elapsed(),
        ok.load(Ordering::Relaxed),
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>()
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load loop barely ran");
    assert!(
        failures.is_empty(),
        "{} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    assert_serves(t.front(), "shop.test", "v2");
    // The releases' nginx files are the same, so no switch reloaded nginx: the same workers
    // serve, and the connection opened before the first switch now gets the new release.
    assert_eq!(nginx_workers(&t.stack), workers, "nginx was reloaded");
    let (status, body) = keep_alive_get(&mut kept, "shop.test");
    assert!(
        status.ends_with("200 OK") && body.contains("v2"),
        "{status} {body}"
    );
    // A restarted agent reads back which slot is live and what runs where.
    let again = WebStack::new(t.stack.settings().clone()).unwrap();
    assert_eq!(again.live_slot("shop").unwrap(), Some(Slot::Green));
    assert!(again.is_running("shop", Slot::Green).unwrap());
    assert!(!again.is_running("shop", Slot::Blue).unwrap());
    let info = again.slot_info("shop", Slot::Green).unwrap().unwrap();
    assert_eq!(info.release_dir, v2.release_dir);
    // The live slot is never stopped or restarted in place.
    let err = again.stop_slot("shop", Slot::Green).unwrap_err();
    assert!(matches!(err, WebError::SlotIsLive { .. }), "{err}");
    let err = again.start_slot(&v2, Slot::Green).unwrap_err();
    assert!(matches!(err, WebError::SlotIsLive { .. }), "{err}");
}

/// (d) A release that fails its health check is never switched to; the old slot keeps serving.
#[test]
fn unhealthy_release_is_never_switched_to() {
    let mut t = TestStack::new(&["shop"]);
    let shared = shared_release("v1");
    let v1 = site("shop", "shop.test", &shared);
    t.deploy(&v1, Slot::Blue, "v1");

    let mut settings = t.stack.settings().clone();
    settings.timeouts.health = Duration::from_secs(3);
    t.stack = WebStack::new(settings).unwrap();
    // Settings that do not import: Django answers 500 on every request.
    let mut broken = site("shop", "shop.test", &shared_release("v2"));
    broken.env.insert(
        "DJANGO_SETTINGS_MODULE".to_owned(),
        "mysite.no_such_settings".to_owned(),
    );
    t.stack
        .start_slot(&broken, Slot::Green)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = t
        .stack
        .health_check("shop", Slot::Green, "/health", Some("v2"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WebError::Unhealthy { .. }), "{msg}");
    assert!(
        msg.contains("HTTP 500") && msg.contains("shop") && msg.contains("green"),
        "{msg}"
    );
    // What an agent does next: stop the failed slot; nginx was never touched.
    t.stack
        .stop_slot("shop", Slot::Green)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.stack.live_slot("shop").unwrap(), Some(Slot::Blue));
    assert_serves(t.front(), "shop.test", "v1");

    // A healthy release of the wrong version does not pass either.
    t.stack
        .start_slot(&v1, Slot::Green)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = t
        .stack
        .health_check("shop", Slot::Green, "/health", Some("v2"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("answered version Some(\"v1\"), expected \"v2\""),
        "{err}"
    );
}
