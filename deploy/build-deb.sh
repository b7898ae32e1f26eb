#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (metadata: [package.metadata.deb] in
# monitor/Cargo.toml) and checks it:
#   1. dpkg-deb -I: name, version, architecture, shared-library dependencies, the conffile, and
#      the generated maintainer scripts that enable/start/stop the unit;
#   2. dpkg-deb -c: exactly the expected files, owned by root, with the expected modes;
#   3. the unpacked files equal their sources, the packaged binary runs, and it accepts the
#      packaged config (`pinsight check`, on the two-socket fixture).
# With --install it also installs the package on this host (the unit is enabled but not
# started: a policy-rc.d denies starts meanwhile), checks the installed files and that an
# edited conffile survives a reinstall, then purges it. It refuses when pinsight is already
# installed. Prints the path of the .deb; exits non-zero on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

install_test=false
case "${1:-}" in
  "") ;;
  --install) install_test=true ;;
  *) echo "usage: $0 [--install]" >&2; exit 2 ;;
esac

die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }
ok() { printf 'build-deb: %s\n' "$*" >&2; }

cargo deb --version >/dev/null 2>&1 || die "cargo-deb not found: run scripts/setup.sh (cargo install cargo-deb)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian package dpkg)"

version=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "pinsight"))')
# cargo deb prints the path of the package as its last line on stdout.
deb=$(cargo deb -p pinsight --profile dist | tail -n 1)
[ -f "$deb" ] || die "cargo deb printed '$deb', which is no file"
ok "built $deb ($(du -h "$deb" | cut -f1))"

# 1. Control data.
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = pinsight ] || die "Package is '$(field Package)', want pinsight"
[ "$(field Version)" = "$version-1" ] || die "Version is '$(field Version)', want $version-1"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || die "Architecture is '$(field Architecture)'"
for lib in libc6 libvirt0; do
  field Depends | grep -qw "$lib" || die "Depends ('$(field Depends)') lacks $lib"
done
[ "$(dpkg-deb -I "$deb" conffiles)" = /etc/pinsight/pinsight.toml ] ||
  die "conffiles is '$(dpkg-deb -I "$deb" conffiles)', want /etc/pinsight/pinsight.toml"
dpkg-deb -I "$deb" postinst | grep -q 'deb-systemd-helper enable pinsight.service' ||
  die "postinst does not enable pinsight.service"
dpkg-deb -I "$deb" postinst | grep -q 'deb-systemd-invoke $_dh_action pinsight.service' ||
  die "postinst does not start (or restart on upgrade) pinsight.service"
dpkg-deb -I "$deb" prerm | grep -q 'deb-systemd-invoke stop pinsight.service' ||
  die "prerm does not stop pinsight.service"
ok "control: pinsight $version-1 $(field Architecture), Depends: $(field Depends); conffile and unit scripts present"

# 2. Contents: path -> mode; every file root-owned; nothing else shipped.
declare -A want=(
  [./usr/bin/pinsight]=-rwxr-xr-x
  [./usr/lib/systemd/system/pinsight.service]=-rw-r--r--
  [./etc/pinsight/pinsight.toml]=-rw-r--r--
  [./usr/share/pinsight/pinsight.rules.yml]=-rw-r--r--
  [./usr/share/pinsight/pinsight.recording.yml]=-rw-r--r--
  [./usr/share/pinsight/prometheus-scrape.yml]=-rw-r--r--
  [./usr/share/pinsight/dashboards/pinsight-host.json]=-rw-r--r--
  [./usr/share/pinsight/dashboards/pinsight-vm.json]=-rw-r--r--
  [./usr/share/pinsight/dashboards/provisioning/pinsight.yml]=-rw-r--r--
  [./usr/share/doc/pinsight/README.md]=-rw-r--r--
  [./usr/share/doc/pinsight/copyright]=-rw-r--r--
)
declare -A seen=()
while read -r mode owner _size _date _time path; do
  [ "${mode:0:1}" = d ] && continue
  [ "$owner" = 0/0 ] || die "$path is owned by $owner, want 0/0"
  [ -n "${want[$path]:-}" ] || die "unexpected file in the package: $path"
  [ "$mode" = "${want[$path]}" ] || die "$path has mode $mode, want ${want[$path]}"
  seen[$path]=1
done < <(dpkg-deb -c "$deb")
for path in "${!want[@]}"; do
  [ -n "${seen[$path]:-}" ] || die "missing from the package: $path"
done
ok "contents: the ${#want[@]} expected files, root-owned, with the expected modes"

# 3. Unpacked: the same bytes as the sources, a binary that runs and accepts its config.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
same() { cmp -s "$1" "$tmp/$2" || die "$2 in the package differs from $1"; }
same deploy/pinsight.service usr/lib/systemd/system/pinsight.service
same deploy/pinsight.toml etc/pinsight/pinsight.toml
same deploy/pinsight.rules.yml usr/share/pinsight/pinsight.rules.yml
same deploy/pinsight.recording.yml usr/share/pinsight/pinsight.recording.yml
same deploy/prometheus-scrape.yml usr/share/pinsight/prometheus-scrape.yml
same dashboards/pinsight-host.json usr/share/pinsight/dashboards/pinsight-host.json
same dashboards/pinsight-vm.json usr/share/pinsight/dashboards/pinsight-vm.json
same dashboards/provisioning/pinsight.yml usr/share/pinsight/dashboards/provisioning/pinsight.yml
same README.md usr/share/doc/pinsight/README.md
[ "$("$tmp/usr/bin/pinsight" --version)" = "pinsight $version" ] ||
  die "the packaged binary prints '$("$tmp/usr/bin/pinsight" --version)', want 'pinsight $version'"
"$tmp/usr/bin/pinsight" check --config "$tmp/etc/pinsight/pinsight.toml" \
  --sysfs-root monitor/tests/fixtures/sysfs/two-socket-gpu >/dev/null ||
  die "the packaged binary refuses the packaged config"
ok "unpacked: files equal their sources; the binary runs and accepts the packaged config"

if $install_test; then
  [ "$(id -u)" = 0 ] || die "--install needs root"
  # Known to dpkg in any state (even removed with its config kept), or a hand-installed binary.
  if dpkg-query -W pinsight >/dev/null 2>&1 || [ -e /usr/bin/pinsight ]; then
    die "--install: pinsight is already installed on this host; not touching it"
  fi
  [ -e /usr/sbin/policy-rc.d ] && die "--install: /usr/sbin/policy-rc.d exists; not replacing it"
  # Deny service starts (deb-systemd-invoke honours policy-rc.d) and purge on any exit.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d; dpkg -P pinsight >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
  dpkg -i "$deb" >/dev/null
  [ "$(/usr/bin/pinsight --version)" = "pinsight $version" ] || die "installed binary does not run"
  [ -L /etc/systemd/system/multi-user.target.wants/pinsight.service ] ||
    die "postinst did not enable pinsight.service"
  echo "# edited by build-deb.sh" >> /etc/pinsight/pinsight.toml
  dpkg -i --force-confold "$deb" >/dev/null
  grep -q '^# edited by build-deb.sh' /etc/pinsight/pinsight.toml ||
    die "a reinstall replaced the edited conffile /etc/pinsight/pinsight.toml"
  dpkg -P pinsight >/dev/null
  for path in /usr/bin/pinsight /etc/pinsight /usr/lib/systemd/system/pinsight.service \
              /etc/systemd/system/multi-user.target.wants/pinsight.service /usr/share/pinsight; do
    [ ! -e "$path" ] || die "$path is left after purge"
  done
  ok "install: installed, unit enabled, edited conffile kept on reinstall, purged clean"
fi
echo "$deb"
