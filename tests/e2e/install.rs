//! `install_server.sh` and the agent's .deb, tried for real.
