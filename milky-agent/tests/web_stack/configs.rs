//! What the stack writes without starting anything: the rendered configs, templates overridden
//! on a server, and slot ports from the range.

use std::collections::BTreeMap;
use std::io::Write;

use milky_agent::web::{Slot, SlotPorts, WebSettings, WebStack};
use milky_dev_support::Ports;

use crate::support::{site, temp_root};

/// (f) The rendered configs, with the temp root filtered out.
#[test]
fn rendered_configs_snapshots() {
    let root = temp_root("milky-snap-");
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
    let mut settings = WebSettings::new(root.path().join("web"), front);
    settings
        .slot_ports
        .fixed
        .insert("shop".to_owned(), [8101, 8102]);
    let stack = WebStack::new(settings).unwrap();
    let release = root.path().join("apps/shop/releases/v1");
    let mut site = site("shop", "shop.example.com", &release);
    site.server_names.push("www.shop.example.com".to_owned());
    site.nginx_snippet = Some("deploy/nginx.conf".into());
    site.apache_snippet = Some("deploy/apache.conf".into());
    // The nginx snippet is read: its copy is named by its contents.
    std::fs::create_dir_all(release.join("deploy")).unwrap();
    std::fs::write(
        release.join("deploy/nginx.conf"),
        "client_max_body_size 20m;\n",
    )
    .unwrap();
    site.env.insert(
        "DJANGO_SETTINGS_MODULE".to_owned(),
        "mysite.settings".to_owned(),
    );
    site.env
        .insert("QUOTED".to_owned(), "a \"b\"\n'c'".to_owned());

    let root_str = root.path().display().to_string();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&root_str), "[ROOT]");
    settings.bind(|| {
        insta::assert_snapshot!(
            "apache_slot_conf",
            stack.render_apache(&site, Slot::Green).unwrap()
        );
        insta::assert_snapshot!(
            "apache_wsgi",
            stack.render_wsgi(&site, Slot::Green).unwrap()
        );
        insta::assert_snapshot!("nginx_app_conf", stack.render_nginx_app(&site).unwrap());
        let includes = [stack.nginx_app_file("shop")];
        insta::assert_snapshot!(
            "nginx_main_conf",
            stack.render_nginx_main(&includes, false).unwrap()
        );
    });
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// A server can replace a template with a file of the same name.
#[test]
fn templates_can_be_overridden_per_server() {
    let root = temp_root("milky-tpl-");
    let overrides = root.path().join("templates");
    std::fs::create_dir_all(&overrides).unwrap();
    let mut f = std::fs::File::create(overrides.join("nginx-app.conf.j2")).unwrap();
    writeln!(f, "# custom for {{{{ app }}}} via {{{{ live_link }}}}").unwrap();
    let mut settings = WebSettings::new(root.path().join("web"), "127.0.0.1:8080".parse().unwrap());
    settings
        .slot_ports
        .fixed
        .insert("shop".to_owned(), [8101, 8102]);
    settings.template_dir = Some(overrides);
    let stack = WebStack::new(settings).unwrap();
    let site = site("shop", "shop.test", &root.path().join("release"));
    let text = stack.render_nginx_app(&site).unwrap();
    let live = stack.nginx_live_link("shop");
    assert!(
        text.ends_with(&format!("# custom for shop via {}\n", live.display())),
        "{text}"
    );
    // The header comes from the agent, not the template, so overrides cannot lose it.
    assert!(
        text.starts_with("# milky-site: default=false https=false\n"),
        "{text}"
    );
    // The other templates stay the embedded ones.
    assert!(
        stack
            .render_apache(&site, Slot::Blue)
            .unwrap()
            .contains("WSGIDaemonProcess shop-blue")
    );
}

/// Slot ports from the range are handed out once, survive a restart and are freed on removal.
#[test]
fn slot_ports_are_allocated_once_and_freed() {
    let root = temp_root("milky-ports-");
    // Nothing binds these: the range is only written down.
    let reserved = Ports::one().unwrap();
    let first = reserved.first();
    let mut settings = WebSettings::new(root.path().join("web"), "127.0.0.1:8080".parse().unwrap());
    settings.slot_ports = SlotPorts {
        fixed: BTreeMap::new(),
        first,
        last: first.saturating_add(200),
    };
    let stack = WebStack::new(settings.clone()).unwrap();
    let shop = [Slot::Blue, Slot::Green].map(|s| stack.slot_port("shop", s).unwrap());
    let blog = [Slot::Blue, Slot::Green].map(|s| stack.slot_port("blog", s).unwrap());
    assert_ne!(shop[0], shop[1]);
    assert!(shop.iter().all(|p| !blog.contains(p)), "{shop:?} {blog:?}");
    let again = WebStack::new(settings).unwrap();
    assert_eq!(again.slot_port("shop", Slot::Green).unwrap(), shop[1]);
    again.remove_app("shop").unwrap();
    let text = std::fs::read_to_string(root.path().join("web/ports.toml")).unwrap();
    assert!(!text.contains("shop") && text.contains("blog"), "{text}");
}
