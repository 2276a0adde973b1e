#!/bin/sh
# shardline's installer for hosts without dpkg or rpm, run from the unpacked
# release tarball as root. It does what the packages do:
#
#   ./install.sh                       install (or upgrade) under /usr/local
#   ./install.sh --uninstall           remove the binary, unit and docs; keep the
#                                      config, the spool and the shardline user
#   ./install.sh --uninstall --purge   also remove /etc/shardline, the spool
#                                      (records not yet delivered are lost) and
#                                      the shardline user and group
#
# Options: --prefix DIR (default /usr/local) for the binary and docs; --root DIR
# to install into another root (an image being built, a chroot): users are made
# with useradd --root and systemd is not called. Give --uninstall the same
# --prefix and --root.
#
# Installing creates the system user and group shardline (also in groups adm and
# systemd-journal where they exist, to read /var/log and the journal), the spool
# /var/lib/shardline (mode 0750), the binary PREFIX/bin/shardline, the unit
# /etc/systemd/system/shardline.service and, unless one exists, the config
# /etc/shardline/shardline.toml (an existing one is kept; the new example goes
# beside it as shardline.toml.new). A fresh install neither enables nor starts
# the agent: the config names the stream first. An upgrade restarts it if it runs.
set -eu

prefix=/usr/local
root=
action=install
purge=false
while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --root) root=$(cd "$2" && pwd) || exit 2; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=true; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$purge" = true ] && [ "$action" != uninstall ]; then
    echo "install.sh: --purge goes with --uninstall" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (it creates a system user and writes /etc)" >&2
    exit 1
fi

here=$(cd "$(dirname "$0")" && pwd)
bin=$prefix/bin/shardline
doc=$prefix/share/doc/shardline
unit=/etc/systemd/system/shardline.service
spool=/var/lib/shardline
# systemd is only told about the live root.
if [ -n "$root" ]; then
    live=false
else
    live=$([ -d /run/systemd/system ] && echo true || echo false)
fi

# useradd, usermod, userdel, groupadd or groupdel, on the root being installed.
account() {
    cmd=$1
    shift
    if [ -n "$root" ]; then
        "$cmd" --root "$root" "$@"
    else
        "$cmd" "$@"
    fi
}

# The live root asks NSS (users may come from a directory service); another
# root has only its files.
has_user() {
    if [ -n "$root" ]; then grep -q "^$1:" "$root/etc/passwd"; else getent passwd "$1" >/dev/null; fi
}
has_group() {
    if [ -n "$root" ]; then grep -q "^$1:" "$root/etc/group"; else getent group "$1" >/dev/null; fi
}
in_group() {
    if [ -n "$root" ]; then
        grep "^$2:" "$root/etc/group" | cut -d: -f4 | tr ',' '\n' | grep -qx "$1"
    else
        id -nG "$1" | tr ' ' '\n' | grep -qx "$2"
    fi
}
# uid or gid (field 3) of an account in the root's passwd or group.
account_id() {
    if [ -n "$root" ]; then grep "^$2:" "$root/etc/$1" | cut -d: -f3; else getent "$1" "$2" | cut -d: -f3; fi
}
nologin() {
    for s in /usr/sbin/nologin /sbin/nologin; do
        [ -x "$root$s" ] && { echo "$s"; return; }
    done
    echo /usr/sbin/nologin
}

install_agent() {
    upgrade=false
    [ -e "$root$bin" ] && upgrade=true

    has_group shardline || account groupadd -r shardline
    if ! has_user shardline; then
        account useradd -r -g shardline -d "$spool" -M -s "$(nologin)" \
            -c "shardline log forwarder" shardline
    fi
    for g in adm systemd-journal; do
        if has_group "$g" && ! in_group shardline "$g"; then
            account usermod -a -G "$g" shardline
        fi
    done

    install -d -m 0755 "$root$prefix/bin" "$root$doc/docs" "$root/etc/systemd/system"
    install -d -m 0755 "$root/etc/shardline"
    install -m 0755 "$here/shardline" "$root$bin.new"
    mv -f "$root$bin.new" "$root$bin"
    sed -e "s|/usr/bin/shardline|$bin|g" -e "s|/usr/share/doc/shardline|$doc|g" \
        "$here/shardline.service" >"$root$unit.new"
    chmod 0644 "$root$unit.new"
    mv -f "$root$unit.new" "$root$unit"
    if [ -e "$root/etc/shardline/shardline.toml" ]; then
        install -m 0644 "$here/shardline.toml" "$root/etc/shardline/shardline.toml.new"
        echo "kept /etc/shardline/shardline.toml; the new example is shardline.toml.new"
    else
        install -m 0644 "$here/shardline.toml" "$root/etc/shardline/shardline.toml"
    fi
    install -m 0644 "$here/README.md" "$here/LICENSE" "$root$doc/"
    install -m 0644 "$here"/docs/*.md "$root$doc/docs/"
    # systemd's StateDirectory= makes it too; this is for `shardline run` by hand.
    install -d -m 0750 "$root$spool"
    uid=$(account_id passwd shardline)
    gid=$(account_id group shardline)
    chown "$uid:$gid" "$root$spool"

    if [ "$live" = true ]; then
        systemctl daemon-reload || true
        if [ "$upgrade" = true ]; then
            systemctl try-restart shardline.service || true
        fi
    fi
    echo "installed shardline $("$root$bin" --version | cut -d' ' -f2) as $bin"
    if [ "$upgrade" = false ]; then
        echo "next: edit /etc/shardline/shardline.toml, then"
        echo "  shardline validate --config /etc/shardline/shardline.toml"
        echo "  systemctl enable --now shardline"
    fi
}

uninstall_agent() {
    if [ "$live" = true ]; then
        # Gracefully: what is not yet delivered stays in the spool.
        systemctl disable --now shardline.service 2>/dev/null || true
    fi
    rm -f "$root$bin" "$root$unit"
    rm -f "$root/etc/systemd/system/multi-user.target.wants/shardline.service"
    rm -rf "$root$doc"
    [ "$live" = true ] && { systemctl daemon-reload || true; }
    if [ "$purge" = true ]; then
        rm -rf "$root/etc/shardline" "$root$spool"
        if has_user shardline; then account userdel shardline; fi
        if has_group shardline; then account groupdel shardline; fi
        echo "removed shardline, its config, its spool and its user"
    else
        echo "removed shardline; kept /etc/shardline, $spool (records not yet delivered) and the user shardline (--purge removes them)"
    fi
}

case "$action" in
install) install_agent ;;
uninstall) uninstall_agent ;;
esac
