#!/usr/bin/env bash
# Installs everything pinsight needs on a Debian 12 host, as root. Idempotent: every step
# checks first, so a machine that already has some of it only gets what is missing.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (eBPF, libvirtd and /dev/kvm need it)"
export DEBIAN_FRONTEND=noninteractive

# Debian packages: libvirt + QEMU/KVM (the real VMs), libvirt-dev/pkg-config (virt crate),
# bpftool and linux-perf (probe cost and independent event counts), prometheus (promtool,
# and the end-to-end test), binutils (assembles the busy test guest), curl (tests scrape),
# dpkg-dev (dpkg-shlibdeps: cargo-deb derives the package's Depends from the binary).
# chromium + chromium-driver (the page's browser test, headless over WebDriver) and tmux
# (the `pinsight top` test).
PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-dev qemu-system-x86 pkg-config
          bpftool linux-perf prometheus binutils curl ca-certificates systemd python3 python3-yaml
          dpkg-dev python3-pip
          chromium chromium-driver tmux)
# One dpkg-query for all of them (one per package costs ~35 ms each on a re-run).
# dpkg-query exits 1 when a package was never known to dpkg (a fresh machine), so its
# status is ignored here: the awk filter decides what counts as installed.
installed=$({ dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true; } \
  | awk '$2 == "install" && $3 == "ok" && $4 == "installed" { print $1 }')
missing=()
for p in "${PACKAGES[@]}"; do
  grep -qxF "$p" <<<"$installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  # Services must not be started by the package scripts (no systemd here); we start them below.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
else
  log "Debian packages already installed"
fi

# Rust: the eBPF crate is built with nightly and -Z build-std=core, which needs rust-src.
command -v rustup >/dev/null || die "rustup not found: install the Rust toolchain (rustup) first"
rustup toolchain list | grep -q '^nightly' || { log "installing nightly toolchain"; rustup toolchain install nightly --profile minimal; }
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi
# bpf-linker 0.10.3 links with rustc's own LLVM; newer releases need a system LLVM Debian 12 lacks.
if ! bpf-linker --version 2>/dev/null | grep -q '0\.10\.3'; then
  log "installing bpf-linker 0.10.3 (about a minute)"
  cargo install bpf-linker@0.10.3 --locked
fi
# cargo-deb builds the Debian package (deploy/build-deb.sh); pinned so the package is
# reproducible. About 40 s on 2 cores.
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.8\.0$'; then
  log "installing cargo-deb 3.8.0 (under a minute)"
  cargo install cargo-deb@3.8.0 --locked
fi

# kubernetes-validate carries the Kubernetes schemas, so deploy/check-manifests.py can
# validate the DaemonSet strictly without a cluster or network. Debian's system Python
# refuses plain pip installs (PEP 668); a pyenv Python does not know the flag's meaning.
# Asks for the installed version without importing the package (an import takes ~0.6 s).
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != 1.37.0 ]; then
  log "installing kubernetes-validate 1.37.0 (Python)"
  python3 -m pip install --quiet kubernetes-validate==1.37.0 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate==1.37.0
fi

# tracefs: the tracepoints pinsight and perf attach to are listed there.
if [ ! -e /sys/kernel/tracing/events ]; then
  log "mounting tracefs on /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing
fi

# libvirt runs QEMU as root: /dev/kvm is root-only on these hosts.
if ! grep -qE '^user *= *"root"' /etc/libvirt/qemu.conf; then
  log "configuring libvirt QEMU driver to run as root"
  printf 'user = "root"\ngroup = "root"\n' >> /etc/libvirt/qemu.conf
fi

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# hugetlbfs on /dev/hugepages, where systemd mounts it at boot: libvirt looks for it when it
# starts, to back <memoryBacking><hugepages/> guests (the hugepage memory tests boot one). A
# libvirtd already running without it would refuse them, so that is an error naming the fix.
if ! grep -q '^[^ ]* [^ ]* hugetlbfs ' /proc/mounts; then
  log "mounting hugetlbfs on /dev/hugepages"
  mkdir -p /dev/hugepages
  mount -t hugetlbfs hugetlbfs /dev/hugepages
  pid_alive /run/libvirtd.pid \
    && die "libvirtd (pid $(cat /run/libvirtd.pid)) started before hugetlbfs was mounted: restart it so it backs hugepage guests"
fi
mkdir -p /run/libvirt
if ! pid_alive /run/virtlogd.pid; then log "starting virtlogd"; virtlogd -d; fi
if ! pid_alive /run/libvirtd.pid; then log "starting libvirtd"; libvirtd -d; fi
for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
virsh -c qemu:///system version >/dev/null 2>&1 || die "libvirtd started but qemu:///system does not answer"
[ -w /dev/kvm ] || die "/dev/kvm is missing or not writable: KVM is required for the VM tests"
log "ready"
