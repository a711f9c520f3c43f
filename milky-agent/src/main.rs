//! `milky-agent`: runs on every server, by cron and at boot (`sync`) or as a service (`run`).

fn main() -> std::process::ExitCode {
    milky_agent::cli::main()
}
