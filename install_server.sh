#!/usr/bin/env bash
# install_server.sh: sets up a Debian 12 / Ubuntu 22.04+ server to run milky-agent.
#
# Idempotent: run it again with the same arguments and it changes nothing (and says so); run it
# with a new --agent to upgrade the binary. Talks to the network only through apt, the URL
# given with --agent, and PyPI (pip installs uv; uv installs a Python apt does not have). The files it writes are kept identical to packaging/ (the .deb ships the
# same ones) by tests/e2e/install.rs.
set -euo pipefail

readonly PACKAGES=(nginx apache2 libapache2-mod-wsgi-py3 python3-venv)
# Installed by hand, not by the package manager: /usr/local (the .deb uses /usr/bin).
readonly BIN=/usr/local/bin/milky-agent
# The uv the agent makes venvs and installs with (its default [python] uv: tools/bin/uv in its
# state dir), from PyPI like its pip.
readonly UV_REQUIREMENT="uv==0.13.8"
readonly TOOLS=/var/lib/milky/tools
# Pythons apt does not have: uv-managed CPythons, with a stable link per version in bin/.
readonly UV_PYTHONS=/opt/milky/python

usage() {
    cat <<'EOF'
usage: install_server.sh [OPTIONS] [--agent] PATH|URL

Sets up this Debian 12 / Ubuntu 22.04+ server for milky-agent, as root:
  - apt: nginx, apache2, libapache2-mod-wsgi-py3, python3-venv (only what is missing)
  - disables the distribution's own nginx and apache2 services and default sites: the agent
    runs its own instances (they would hold port 80)
  - installs the agent binary (a file, or an http(s) URL) as /usr/local/bin/milky-agent
  - writes /etc/milky/agent.toml from the options (kept if it exists, unless --force),
    and /etc/milky/agent.toml.example with every setting
  - creates /srv/milky/apps and /var/lib/milky (mode 0755)
  - installs uv (from PyPI) into /var/lib/milky/tools, where the agent looks for it
  - with --python: apache2-dev and gcc (the agent builds mod_wsgi for other Pythons), and each
    Python: the distribution's python3.X (with -dev and -venv) where apt has it, else a
    uv-managed CPython under /opt/milky/python; listed in agent.toml's [python] interpreters
  - runs the agent at boot and every 5 minutes: milky-agent.timer where systemd runs,
    else /etc/cron.d/milky-agent (log: /var/log/milky-agent.log)

Options:
  --agent PATH|URL      the milky-agent binary (also accepted without --agent); may be left
                        out when one is installed already
  --store URL           s3://BUCKET/PREFIX or file:///PATH (required for a new agent.toml)
  --group GROUP         the group this server belongs to (required for a new agent.toml)
  --host NAME           this server's name in reports (default: the machine's host name)
  --endpoint-url URL    an S3-compatible server instead of AWS
  --listen ADDR:PORT    nginx's front address (default 0.0.0.0:80)
  --trusted-key KEY     a public key (`cargo milky keygen` prints it: milky-ed25519 ID BASE64)
                        whose signature packages must carry; repeat for several keys. Without
                        one, packages are not verified (see README, "Signed packages")
  --python X.Y          a Python apps may ask for (`[app] python`), e.g. 3.13; repeat for
                        several. Run again later with only --python to add one
  --force               overwrite an existing /etc/milky/agent.toml
  --scheduler KIND      auto (default), systemd or cron: how the agent is run
  --root DIR            install into DIR instead of / (every path prefixed; apt and systemctl
                        are skipped): for trying the script out
  -h, --help            this text

Examples:
  install_server.sh --store s3://my-bucket/milky --group stable ./milky-agent
  install_server.sh --store s3://my-bucket/milky --group unstable --host web-7 \
      --agent https://downloads.example.com/milky-agent-x86_64
  install_server.sh --agent ./milky-agent      # upgrade the binary only
  install_server.sh --python 3.13              # add Python 3.13 for the apps that ask for it
EOF
}

ROOT=""
AGENT=""
STORE=""
GROUP=""
HOST=""
ENDPOINT=""
LISTEN=""
TRUSTED_KEYS=()
PYTHONS=()
FORCE=0
SCHEDULER=auto
CHANGES=0
TMP=""
OUR_POLICY_RC=""
AGENT_VERSION=""

say() { printf '%s\n' "$*"; }
warn() { printf 'install_server.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'install_server.sh: error: %s\n' "$*" >&2
    exit 2
}
changed() {
    CHANGES=$((CHANGES + 1))
    say "  changed: $*"
}
unchanged() { say "  ok:      $*"; }
skipped() { say "  skipped: $*"; }

cleanup() {
    if [[ -n $OUR_POLICY_RC ]]; then
        rm -f "$OUR_POLICY_RC"
    fi
    if [[ -n $TMP ]]; then
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

# --- arguments ---------------------------------------------------------------------------------

need_value() {
    [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case $1 in
    --*=*)
        # --opt=value: split it and go round again.
        opt=${1%%=*}
        value=${1#*=}
        shift
        set -- "$opt" "$value" "$@"
        continue
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --agent)
        need_value "$@"
        AGENT=$2
        shift
        ;;
    --store)
        need_value "$@"
        STORE=$2
        shift
        ;;
    --group)
        need_value "$@"
        GROUP=$2
        shift
        ;;
    --host)
        need_value "$@"
        HOST=$2
        shift
        ;;
    --endpoint-url)
        need_value "$@"
        ENDPOINT=$2
        shift
        ;;
    --listen)
        need_value "$@"
        LISTEN=$2
        shift
        ;;
    --trusted-key)
        need_value "$@"
        TRUSTED_KEYS+=("$2")
        shift
        ;;
    --python)
        need_value "$@"
        PYTHONS+=("$2")
        shift
        ;;
    --scheduler)
        need_value "$@"
        SCHEDULER=$2
        shift
        ;;
    --root)
        need_value "$@"
        ROOT=$2
        shift
        ;;
    --force) FORCE=1 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
        [[ -z $AGENT ]] || die "the agent binary is given twice: $AGENT and $1"
        AGENT=$1
        ;;
    esac
    shift
done

# Values go into TOML strings and paths: only plain characters (the agent checks them again).
[[ -z $STORE || $STORE =~ ^(s3://[a-z0-9][a-z0-9.-]*(/[A-Za-z0-9._/=+-]*)?|file:///[A-Za-z0-9._/=+-]*)$ ]] ||
    die "--store must be s3://BUCKET/PREFIX or file:///PATH, not '$STORE'"
[[ -z $GROUP || $GROUP =~ ^[a-z0-9][a-z0-9_-]{0,63}$ ]] ||
    die "--group: 1 to 64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit, not '$GROUP'"
[[ -z $HOST || ($HOST =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ && $HOST != *..*) ]] ||
    die "--host: 1 to 128 characters of letters, digits, '.', '_' and '-', not '$HOST'"
endpoint_re='^https?://[]A-Za-z0-9.:[-]+(/[A-Za-z0-9._/-]*)?$'
[[ -z $ENDPOINT || $ENDPOINT =~ $endpoint_re ]] ||
    die "--endpoint-url must be http(s)://HOST[:PORT], not '$ENDPOINT'"
[[ -z $LISTEN || $LISTEN =~ ^([0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$ ]] ||
    die "--listen must be IPV4:PORT or [IPV6]:PORT, not '$LISTEN'"
[[ $SCHEDULER =~ ^(auto|systemd|cron)$ ]] || die "--scheduler must be auto, systemd or cron"
for version in "${PYTHONS[@]}"; do
    [[ $version =~ ^3\.[0-9]{1,2}$ ]] || die "--python must be a Python 3 series such as 3.13, not '$version'"
done
key_re='^milky-ed25519 [0-9a-f]{16} [A-Za-z0-9+/]{43}=( [A-Za-z0-9._@ -]*)?$'
for key in "${TRUSTED_KEYS[@]}"; do
    [[ $key =~ $key_re ]] ||
        die "--trusted-key must be a public key line, 'milky-ed25519 ID BASE64' (cargo milky keygen prints it), not '$key'"
done

if [[ -n $ROOT ]]; then
    mkdir -p -- "$ROOT"
    ROOT=$(cd -- "$ROOT" && pwd)
    [[ $ROOT != / ]] || ROOT=""
fi
if [[ -z $ROOT && $EUID -ne 0 ]]; then
    die "run as root (or try it out with --root DIR)"
fi

# What cannot work is refused before anything changes.
if [[ -z $AGENT && ! -x $ROOT$BIN ]]; then
    die "no agent binary: give its path or URL (see --help)"
fi
if [[ (-z $STORE || -z $GROUP) && (! -e $ROOT/etc/milky/agent.toml || -n $HOST$ENDPOINT$LISTEN${TRUSTED_KEYS[*]} || $FORCE -eq 1) ]]; then
    die "--store and --group are needed to write /etc/milky/agent.toml"
fi
if [[ -n $AGENT && ! $AGENT =~ ^https?:// && ! -f $AGENT ]]; then
    die "no such file: $AGENT"
fi

systemd_runs() { [[ -d /run/systemd/system ]]; }
if [[ $SCHEDULER == auto ]]; then
    if systemd_runs; then SCHEDULER=systemd; else SCHEDULER=cron; fi
fi

TMP=$(mktemp -d)

# --- helpers -----------------------------------------------------------------------------------

# A path on the target system, under --root when given.
target() { printf '%s%s' "$ROOT" "$1"; }

mode_of() { stat -c %a -- "$1"; }

# ensure_dir PATH MODE
ensure_dir() {
    local dir
    dir=$(target "$1")
    if [[ -d $dir && $(mode_of "$dir") == "${2#0}" ]]; then
        unchanged "$1/ (mode $2)"
    elif [[ -d $dir ]]; then
        chmod "$2" -- "$dir"
        changed "$1/: mode set to $2"
    else
        install -d -m "$2" -- "$dir"
        changed "$1/ created (mode $2)"
    fi
}

# put_file SOURCE PATH MODE: installs SOURCE's bytes as PATH (atomically: a running agent or
# cron never sees half a file) unless it is there already with that mode.
put_file() {
    local src=$1 path=$2 mode=$3 dest
    dest=$(target "$path")
    if [[ -f $dest ]] && cmp -s -- "$src" "$dest"; then
        if [[ $(mode_of "$dest") == "${mode#0}" ]]; then
            unchanged "$path"
        else
            chmod "$mode" -- "$dest"
            changed "$path: mode set to $mode"
        fi
        return
    fi
    local existed=0
    [[ -e $dest ]] && existed=1
    install -d -m 0755 -- "$(dirname -- "$dest")"
    install -m "$mode" -- "$src" "$dest.new"
    mv -f -- "$dest.new" "$dest"
    if ((existed)); then changed "$path updated"; else changed "$path written"; fi
}

# remove_file PATH WHY
remove_file() {
    local dest
    dest=$(target "$1")
    if [[ -e $dest || -L $dest ]]; then
        rm -f -- "$dest"
        changed "$1 removed ($2)"
    fi
}

# The packaging files name the .deb's binary, /usr/bin/milky-agent; this install has its own.
with_bin() { sed "s|/usr/bin/milky-agent|$BIN|g"; }

# --- embedded copies of packaging/ (tests/e2e/install.rs keeps them identical) -----------------

# >>> packaging/milky-agent.service
packaging_service() {
    cat <<'EOF'
# One pass of the MilkyWhite agent: make this server run what the index gives its group.
# Started by milky-agent.timer at boot and every 5 minutes; `systemctl start milky-agent`
# runs a pass now. Logs: `journalctl -u milky-agent`.
[Unit]
Description=MilkyWhite agent pass (sync this server with the index)
Documentation=https://example.invalid/milkywhite
Wants=network-online.target
After=network-online.target
# Installed but not configured yet: skip quietly until the admin writes the settings.
ConditionPathExists=/etc/milky/agent.toml

[Service]
Type=oneshot
ExecStart=/usr/bin/milky-agent sync
# The agent starts its own nginx and Apache instances, which must outlive the pass: only the
# agent itself is ever killed (at the end of the pass, on stop, on timeout), never its cgroup.
KillMode=process
# nginx and Apache inherit the agent's limits.
LimitNOFILE=65536
# A hung pass must not block every later one (a oneshot is never started twice at once).
TimeoutStartSec=1h
# ~/.aws/ of root, when the store's credentials are kept there rather than in an instance role.
Environment=HOME=/root
EOF
}

# >>> packaging/milky-agent.timer
packaging_timer() {
    cat <<'EOF'
# Runs milky-agent.service (one pass) shortly after boot, so a server started from an image
# converges at once, and then every 5 minutes on the clock. A pass still running when the timer
# fires is not started a second time.
[Unit]
Description=MilkyWhite agent: a pass at boot and every 5 minutes
Documentation=https://example.invalid/milkywhite

[Timer]
OnBootSec=10s
OnCalendar=*:0/5
Unit=milky-agent.service

[Install]
WantedBy=timers.target
EOF
}

# >>> packaging/milky-agent.cron
packaging_cron() {
    cat <<'EOF'
# MilkyWhite agent, for machines without systemd: a pass every 5 minutes and one at boot.
# The agent takes its own lock, so an overlapping run returns at once (no flock needed).
# nginx and apache2 live in /usr/sbin: cron's default PATH does not have it.
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
*/5 * * * * root /usr/bin/milky-agent sync >>/var/log/milky-agent.log 2>&1
@reboot     root /usr/bin/milky-agent sync >>/var/log/milky-agent.log 2>&1
EOF
}

# >>> packaging/milky-agent.logrotate
packaging_logrotate() {
    cat <<'EOF'
# The cron job's log (machines without systemd; with systemd the journal keeps it).
/var/log/milky-agent.log {
	weekly
	rotate 8
	compress
	delaycompress
	missingok
	notifempty
}
EOF
}

# >>> packaging/agent.toml.example
packaging_agent_toml_example() {
    cat <<'EOF'
# MilkyWhite agent settings: copy to /etc/milky/agent.toml (mode 0600, it may hold secrets
# under [env]) and fill in `store` and `group`; everything else has the default shown.
# The agent refuses unknown keys and bad values (exit 2), so a typo never goes unnoticed.
#
# Credentials for the store come from the standard AWS chain: an instance role, or
# /root/.aws/credentials, or AWS_* variables.

# Where the index and packages live: s3://BUCKET/PREFIX or file:///PATH.
# store = "s3://my-bucket/milky"
# The group this server belongs to: it runs what the index gives this group.
# group = "stable"
# This server's name in status reports and logs (default: the machine's host name).
# host = "web-1"
# An S3-compatible server instead of AWS (MinIO, Ceph, ...); switches to path-style addressing.
# endpoint_url = "http://10.0.0.5:9000"

# [paths]
# Unpacked releases: APPS/<app>/releases/<version>/ and APPS/<app>/current.
# apps = "/srv/milky/apps"
# What the agent keeps between passes: its lock, the cached index, failures.
# state = "/var/lib/milky"
# nginx's prefix and the Apache slots' config roots.
# web = "/var/lib/milky/web"
# Files here replace the embedded nginx/Apache templates of the same name.
# templates = "/etc/milky/templates"
# The agent's own log (agent.log) and each app's hooks output (hooks/<app>.log).
# logs = "/var/log/milky"

# [web]
# nginx's front address, shared by every app (told apart by server name).
# listen = "0.0.0.0:80"
# Loopback ports handed out to Apache slots, two per app.
# slot_ports = [8100, 8999]
# apache_user = "www-data"
# apache_group = "www-data"
# Hooks (collectstatic, migrations) run as this user, never as root; default: apache_user.
# hook_user = "www-data"
# nginx_user = "nobody"
# nginx_workers = 2
# How long a start, a health check and the draining of an old slot may take.
# start_timeout = "30s"
# health_timeout = "30s"
# drain_timeout = "30s"
# The old slot's whole stop after a switch (requests in flight, then Apache's graceful stop);
# past it its processes are killed, with a warning.
# stop_timeout = "30s"

# [releases]
# The default Python: apps that ask for none ([app] python) run on it, with the distribution's
# mod_wsgi, which must be built for it.
# python = "/usr/bin/python3"
# Releases kept on disk per app (the live one included), so switching back needs no download.
# keep = 3
# Caps against decompression bombs.
# max_unpacked_bytes = 4294967296
# max_entries = 200000
# How long a one-time-task (migration) lease lasts without renewal.
# once_lease = "60s"
# How long a pass waits for another server's one-time tasks before it moves on.
# once_wait = "60s"

# [limits]
# How long each step may run: one still running then is ended with its process group and
# fails, with its output, in the hooks log and the status report.
# Each once or first-deploy hook (migrations); the lease is not renewed past it.
# once_hooks = "30m"
# Each per-server hook (collectstatic).
# server_hooks = "10m"
# Making a release's venv; installing its requirements.
# install = "30m"
# Each nginx or Apache command (nginx -t, nginx -s reload, apache2 -k start…).
# service_commands = "2m"
# A pass holding the run lock longer than this is reported as stuck by the passes it blocks.
# stuck_pass = "2h"

# [python]
# Pythons apps may ask for ([app] python), besides the default; `install_server.sh --python 3.13`
# installs one and lists it here. For another Python the agent builds mod_wsgi once (needs
# apache2-dev and gcc).
# interpreters = ["/usr/bin/python3.13"]
# Also offer CPython installs found in /usr/bin, /usr/local/bin, /opt/*/bin, /opt/*/*/bin.
# discover = true
# The uv that makes venvs and installs (default: tools/bin/uv in the state dir); none: pip.
# uv = "/var/lib/milky/tools/bin/uv"
# uv's cache, shared by every release (default: uv-cache in the state dir).
# cache = "/var/lib/milky/uv-cache"
# Where the mod_wsgi built per Python is kept (default: python/mod_wsgi in the state dir).
# mod_wsgi_dir = "/var/lib/milky/python/mod_wsgi"

# [logs]
# Ship nginx's, Apache's, the hooks' and the agent's logs to logs/<group>/<host>/ in the store.
# ship = true
# Bytes shipped per pass at most (before gzip): a backlog goes out over several passes.
# max_bytes_per_pass = 33554432
# segment_bytes = 8388608
# The agent's log and each hooks log are rotated past this size (one old file kept).
# local_max_bytes = 16777216
# nginx's logs and stopped Apache slots' logs are cut down past this size once shipped.
# web_max_bytes = 67108864

# [commands]
# How nginx and Apache are started, tested, reloaded and stopped: one argument per string,
# no shell; {conf}, {prefix}, {error_log} are filled in. The defaults run the binaries directly.
# nginx_start = ["nginx", "-p", "{prefix}/", "-c", "{conf}", "-e", "{error_log}"]

# [env]
# Environment of every app's processes and hooks on this server, after the app's own settings.
# DATABASE_URL = "postgres://app@db-1/app"

# [signing]
# Public keys this server requires packages to be signed by (`cargo milky keygen` prints the
# line). Without any, every package in the index is installed and the status report says that
# signatures are not verified. The key below is only an example: nobody holds its secret half.
# trusted_keys = ["milky-ed25519 98d7512a33eb8f6d TJSCyPulN6AyxiITrQCW+Ek7fw5lTo3AvHQCwKgzoeE="]
# A file of such lines (# comments allowed), read at every pass; set but unreadable or empty,
# nothing is installed until it is fixed.
# trusted_keys_file = "/etc/milky/trusted_keys"
EOF
}

# --- steps -------------------------------------------------------------------------------------

apt_missing() {
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$package"
        fi
    done
}

step_packages() {
    say "Packages"
    local wanted=("${PACKAGES[@]}")
    if [[ $AGENT =~ ^https?:// ]] && ! command -v curl >/dev/null && ! command -v wget >/dev/null; then
        wanted+=(curl)
    fi
    if [[ $SCHEDULER == cron ]]; then
        wanted+=(cron)
    fi
    if [[ ${#PYTHONS[@]} -gt 0 ]]; then
        wanted+=(apache2-dev gcc)
    fi
    if [[ -n $ROOT ]]; then
        skipped "apt (--root): ${wanted[*]} are neither checked nor installed"
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found: this script is for Debian and Ubuntu"
    local missing
    mapfile -t missing < <(apt_missing "${wanted[@]}")
    if [[ ${#missing[@]} -eq 0 ]]; then
        unchanged "installed: ${wanted[*]}"
        return
    fi
    # Keep the distribution's nginx and Apache from starting while they install: both would
    # claim port 80, the second one fails, and apt reports the package as broken.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# install_server.sh: no service starts during its apt run\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        OUR_POLICY_RC=/usr/sbin/policy-rc.d
    fi
    say "  apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if [[ -n $OUR_POLICY_RC ]]; then
        rm -f "$OUR_POLICY_RC"
        OUR_POLICY_RC=""
    fi
    changed "installed: ${missing[*]}"
}

# The distribution's own nginx and apache2 services: off, so they never hold port 80 and never
# compete with the agent's instances. Their default sites go too (a2dissite does the same).
step_distro_services() {
    say "The distribution's nginx and Apache"
    remove_file /etc/nginx/sites-enabled/default "nginx's default site"
    remove_file /etc/apache2/sites-enabled/000-default.conf "Apache's default site"
    if [[ -n $ROOT ]]; then
        skipped "systemctl/update-rc.d (--root): apache2 and nginx services left as they are"
        return
    fi
    local service
    for service in apache2 nginx; do
        if systemd_runs; then
            if systemctl is-enabled --quiet "$service.service" 2>/dev/null ||
                systemctl is-active --quiet "$service.service" 2>/dev/null; then
                systemctl disable --now --quiet "$service.service" ||
                    die "could not stop and disable $service.service (systemctl disable --now $service)"
                changed "$service.service stopped and disabled"
            else
                unchanged "$service.service disabled"
            fi
            continue
        fi
        # No systemd (a container, a chroot, SysV init): the init script's links and its daemon.
        if compgen -G "/etc/rc[2345].d/S[0-9][0-9]$service" >/dev/null && command -v update-rc.d >/dev/null; then
            update-rc.d "$service" disable >/dev/null 2>&1 || warn "update-rc.d $service disable failed"
            changed "$service: init script disabled"
        else
            unchanged "$service: not started at boot"
        fi
        local pidfile=/run/$service.pid
        [[ $service == apache2 ]] && pidfile=/run/apache2/apache2.pid
        if [[ -r $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [[ -x /etc/init.d/$service ]]; then
            /etc/init.d/"$service" stop >/dev/null 2>&1 || warn "could not stop the distribution's $service"
            changed "$service: the distribution's daemon stopped"
        fi
    done
}

step_directories() {
    say "Directories (www-data and nobody must traverse them)"
    ensure_dir /etc/milky 0755
    ensure_dir /srv/milky 0755
    ensure_dir /srv/milky/apps 0755
    ensure_dir /var/lib/milky 0755
}

# Downloads or copies the agent into $TMP and checks it runs here, before anything is changed.
fetch_agent() {
    [[ -n $AGENT ]] || return 0
    local candidate=$TMP/milky-agent
    if [[ $AGENT =~ ^https?:// ]]; then
        say "Downloading $AGENT"
        if command -v curl >/dev/null; then
            curl -fsSL --retry 3 --proto '=http,https' -o "$candidate" -- "$AGENT" ||
                die "could not download $AGENT"
        elif command -v wget >/dev/null; then
            wget -q -O "$candidate" -- "$AGENT" || die "could not download $AGENT"
        else
            die "neither curl nor wget is installed to download $AGENT"
        fi
    else
        cp -- "$AGENT" "$candidate"
    fi
    chmod 0755 "$candidate"
    # It must run here (right architecture) and be the agent, before it replaces anything.
    AGENT_VERSION=$("$candidate" --version 2>/dev/null) || AGENT_VERSION=""
    [[ $AGENT_VERSION == milky-agent* ]] || die "$AGENT is not a milky-agent binary for this machine"
}

step_agent_binary() {
    say "Agent binary"
    if [[ -z $AGENT ]]; then
        unchanged "$BIN (kept; no --agent given)"
        return
    fi
    put_file "$TMP/milky-agent" "$BIN" 0755
    say "  $AGENT_VERSION"
}

step_config() {
    say "Settings"
    packaging_agent_toml_example >"$TMP/agent.toml.example"
    put_file "$TMP/agent.toml.example" /etc/milky/agent.toml.example 0644

    local config
    config=$(target /etc/milky/agent.toml)
    if [[ -z $STORE || -z $GROUP ]]; then
        unchanged "/etc/milky/agent.toml (kept; no --store and --group given)"
        return
    fi
    {
        say "# MilkyWhite agent settings, written by install_server.sh."
        say "# Every setting, with its default: /etc/milky/agent.toml.example"
        say "store = \"$STORE\""
        say "group = \"$GROUP\""
        if [[ -n $HOST ]]; then say "host = \"$HOST\""; fi
        if [[ -n $ENDPOINT ]]; then say "endpoint_url = \"$ENDPOINT\""; fi
        say ""
        say "[web]"
        say "listen = \"${LISTEN:-0.0.0.0:80}\""
        if [[ ${#PYTHONS[@]} -gt 0 ]]; then
            say ""
            say "[python]"
            say "interpreters = [$(interpreter_list)]"
        fi
        if [[ ${#TRUSTED_KEYS[@]} -gt 0 ]]; then
            say ""
            say "[signing]"
            say "trusted_keys = ["
            for key in "${TRUSTED_KEYS[@]}"; do say "    \"$key\","; done
            say "]"
        fi
    } >"$TMP/agent.toml"
    if [[ -e $config && $FORCE -eq 0 ]] && ! cmp -s -- "$TMP/agent.toml" "$config"; then
        unchanged "/etc/milky/agent.toml kept: it differs from the options (--force overwrites it)"
        return
    fi
    put_file "$TMP/agent.toml" /etc/milky/agent.toml 0600
}

# The executable of Python X.Y on this server: the distribution's, where apt has (or had) it,
# else the link to the uv-managed one. Decided once per run (apt-cache takes seconds).
declare -A PYTHON_PATH=()
resolve_python_paths() {
    local version
    for version in "${PYTHONS[@]}"; do
        if [[ -x /usr/bin/python$version ]] || apt_has "python$version"; then
            PYTHON_PATH[$version]=/usr/bin/python$version
        else
            PYTHON_PATH[$version]=$UV_PYTHONS/bin/python$version
        fi
    done
}
python_path() { printf '%s' "${PYTHON_PATH[$1]}"; }

apt_has() {
    command -v apt-cache >/dev/null &&
        apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'
}

# "a", "b" of every --python's executable, for a TOML array.
interpreter_list() {
    local version sep=""
    for version in "${PYTHONS[@]}"; do
        printf '%s"%s"' "$sep" "$(python_path "$version")"
        sep=", "
    done
}

step_uv() {
    say "uv (the agent's installer)"
    if [[ -x $(target "$TOOLS/bin/uv") ]]; then
        unchanged "$TOOLS/bin/uv"
        return
    fi
    if [[ -n $ROOT ]]; then
        skipped "uv (--root): would pip install $UV_REQUIREMENT into $TOOLS"
        return
    fi
    python3 -m venv "$TOOLS" || die "python3 -m venv $TOOLS failed (is python3-venv installed?)"
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "$UV_REQUIREMENT" ||
        die "pip install $UV_REQUIREMENT failed: the agent falls back to pip, but uv.lock projects need uv"
    changed "$TOOLS/bin/uv installed ($("$TOOLS/bin/uv" --version))"
}

step_pythons() {
    [[ ${#PYTHONS[@]} -gt 0 ]] || return 0
    say "Pythons for apps: ${PYTHONS[*]}"
    local version path
    for version in "${PYTHONS[@]}"; do
        path=$(python_path "$version")
        if [[ -x $(target "$path") ]]; then
            unchanged "Python $version: $path"
        elif [[ $path == /usr/bin/* ]]; then
            if [[ -n $ROOT ]]; then
                skipped "Python $version (--root): would apt-get install python$version"
                continue
            fi
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "python$version" "python$version-dev" "python$version-venv"
            changed "Python $version: $path (apt)"
        elif [[ -x $(target "$TOOLS/bin/uv") ]]; then
            install_uv_python "$version" "$path"
        elif [[ -n $ROOT ]]; then
            skipped "Python $version (--root, no $TOOLS/bin/uv there): would install $path with uv"
        else
            die "installing Python $version needs uv ($TOOLS/bin/uv)"
        fi
    done
    step_python_config
}

# A uv-managed CPython of series $1 under $UV_PYTHONS, reached through $2 (its bin/ link).
# uv downloads it from python-build-standalone's releases on GitHub, or from where
# UV_PYTHON_INSTALL_MIRROR or UV_PYTHON_DOWNLOADS_JSON_URL in this script's environment say
# (a mirror, or a file:// list of local archives, for a server without GitHub).
install_uv_python() {
    local version=$1 path=$2 dir link dest
    dir=$(target "$UV_PYTHONS")
    UV_PYTHON_INSTALL_DIR=$dir UV_PYTHON_BIN_DIR=$dir/bin \
        "$(target "$TOOLS/bin/uv")" python install --no-config "$version" ||
        die "uv python install $version failed (it downloads from GitHub unless UV_PYTHON_INSTALL_MIRROR or UV_PYTHON_DOWNLOADS_JSON_URL says otherwise: is it reachable?)"
    link=$(target "$path")
    [[ -L $link ]] || die "uv installed Python $version, but $path is not there"
    # uv links by absolute path (bin/pythonX.Y, and cpython-X.Y-… to the patch release);
    # relative, the links hold under --root too.
    for link in "$link" "$dir"/cpython-*; do
        [[ -L $link ]] || continue
        dest=$(readlink -- "$link")
        [[ $dest == "$dir"/* ]] || continue
        if [[ $link == "$dir"/bin/* ]]; then
            ln -sfn -- "../${dest#"$dir"/}" "$link"
        else
            ln -sfn -- "${dest#"$dir"/}" "$link"
        fi
    done
    link=$(target "$path")
    [[ -x $link ]] || die "uv installed Python $version, but $path does not run"
    chmod -R a+rX -- "$dir"
    changed "Python $version: $path (uv-managed)"
}

# Lists each --python's executable in an existing agent.toml's [python] interpreters (the one
# step_config writes lists them already).
step_python_config() {
    local config path version line
    config=$(target /etc/milky/agent.toml)
    [[ -f $config ]] || return 0
    for version in "${PYTHONS[@]}"; do
        path=$(python_path "$version")
        if grep -qF "\"$path\"" "$config"; then
            unchanged "/etc/milky/agent.toml lists $path"
            continue
        fi
        line=$(grep -n '^interpreters *= *\[' "$config" | head -n 1 | cut -d: -f1)
        if [[ -n $line ]]; then
            sed -n "${line}p" "$config" | grep -q '\]' ||
                die "/etc/milky/agent.toml: [python] interpreters spans several lines; add \"$path\" to it by hand"
            sed "${line}s|\]|, \"$path\"]|; ${line}s|\[, |[|" "$config" >"$TMP/agent.toml.python"
        elif grep -q '^\[python\]' "$config"; then
            sed "/^\[python\]/a interpreters = [\"$path\"]" "$config" >"$TMP/agent.toml.python"
        else
            { cat -- "$config"; printf '\n[python]\ninterpreters = ["%s"]\n' "$path"; } >"$TMP/agent.toml.python"
        fi
        put_file "$TMP/agent.toml.python" /etc/milky/agent.toml 0600
    done
}

step_scheduler() {
    if [[ $SCHEDULER == systemd ]]; then
        say "Schedule: milky-agent.timer (at boot and every 5 minutes)"
        remove_file /etc/cron.d/milky-agent "systemd's timer runs the agent"
        remove_file /etc/logrotate.d/milky-agent "the journal keeps the agent's log"
        packaging_service | with_bin >"$TMP/milky-agent.service"
        packaging_timer >"$TMP/milky-agent.timer"
        local before=$CHANGES
        put_file "$TMP/milky-agent.service" /etc/systemd/system/milky-agent.service 0644
        put_file "$TMP/milky-agent.timer" /etc/systemd/system/milky-agent.timer 0644
        if [[ -n $ROOT ]]; then
            skipped "systemctl (--root): would run 'systemctl enable --now milky-agent.timer'"
        elif ! systemd_runs; then
            warn "systemd does not run here: the timer is not enabled (use --scheduler cron)"
        else
            if ((CHANGES > before)); then
                systemctl daemon-reload
            fi
            if systemctl is-enabled --quiet milky-agent.timer && systemctl is-active --quiet milky-agent.timer; then
                unchanged "milky-agent.timer enabled and active"
            else
                systemctl enable --now --quiet milky-agent.timer
                changed "milky-agent.timer enabled and started"
            fi
        fi
    else
        say "Schedule: /etc/cron.d/milky-agent (at boot and every 5 minutes)"
        if [[ -z $ROOT ]] && systemd_runs && [[ -e /etc/systemd/system/milky-agent.timer ]]; then
            systemctl disable --now --quiet milky-agent.timer || true
        fi
        local before=$CHANGES
        remove_file /etc/systemd/system/milky-agent.timer "cron runs the agent"
        remove_file /etc/systemd/system/milky-agent.service "cron runs the agent"
        if [[ -z $ROOT ]] && systemd_runs && ((CHANGES > before)); then
            systemctl daemon-reload
        fi
        packaging_cron | with_bin >"$TMP/milky-agent.cron"
        packaging_logrotate >"$TMP/milky-agent.logrotate"
        put_file "$TMP/milky-agent.cron" /etc/cron.d/milky-agent 0644
        put_file "$TMP/milky-agent.logrotate" /etc/logrotate.d/milky-agent 0644
        if [[ -z $ROOT && ! -e /run/crond.pid ]]; then
            warn "cron does not seem to run: start it (service cron start), or nothing runs the agent"
        fi
    fi
}

# --- main --------------------------------------------------------------------------------------

if [[ -n $ROOT ]]; then
    say "Installing into $ROOT (--root: apt and systemctl are skipped)"
elif [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    os=$(. /etc/os-release && printf '%s' "${ID:-} ${ID_LIKE:-}")
    [[ $os == *debian* || $os == *ubuntu* ]] || warn "not Debian or Ubuntu ($os); going on anyway"
fi
if [[ -z $ROOT ]] && dpkg-query -W -f='${Status}' milky-agent 2>/dev/null | grep -q 'install ok installed'; then
    warn "the milky-agent .deb is installed too; the files written here take precedence over it"
fi

resolve_python_paths
step_packages
fetch_agent
step_distro_services
step_directories
step_agent_binary
step_config
step_uv
step_pythons
step_scheduler

if ((CHANGES == 0)); then
    say "Nothing changed: this server was set up already."
else
    say "Done: $CHANGES change(s)."
    if [[ -z $ROOT ]]; then
        if [[ $SCHEDULER == systemd ]]; then
            say "The agent runs within 5 minutes; to run a pass now: systemctl start milky-agent; journalctl -u milky-agent"
        else
            say "The agent runs within 5 minutes; to run a pass now: $BIN sync"
        fi
    fi
fi
