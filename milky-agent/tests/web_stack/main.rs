//! The web layer against the real parts: nginx, Apache2 + mod_wsgi and the Django fixture in
//! tests/fixtures/django-app, each test on its own loopback ports and temp root under /tmp.
//!
//! Releases are prepared once and shared: the Django wheels are downloaded once into
//! /tmp/milky-test-wheels (the only network access), releases of the fixture go to
//! /tmp/milky-web-test-releases keyed by a hash of the fixture, and a test that needs its own
//! snippets lays a few files over a shared release instead of preparing another venv.

mod support;

mod configs;
mod prepare;
mod recovery;
mod removal;
mod snippets;
mod stopping;
mod switching;
