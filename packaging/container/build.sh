#!/usr/bin/env bash
# shardline's container image, built from scratch with buildah (as root):
#
#   packaging/container/build.sh TREE ARCHIVE VERSION
#
# TREE is the release tree (the unpacked tarball); the image is committed as
# localhost/shardline:VERSION and written to ARCHIVE as an OCI archive
# (`podman load -i ARCHIVE`). It holds only what the agent runs with: the
# binary and the libraries it links, journalctl and its libraries (the
# [[journald]] source reads the journal through it), the CA certificates, a
# passwd and group naming the user shardline (uid and gid 10001) it runs as,
# and two configs: shardline.toml (a socket, metrics on 0.0.0.0:9717) and
# host-logs.toml (the host's /var/log and journal, mounted read-only). The
# spool /var/lib/shardline is a volume.
set -euo pipefail
cd "$(dirname "$0")/../.."

tree=$1
archive=$2
version=$3
uid=10001

for tool in buildah ldd journalctl; do
  command -v "$tool" >/dev/null || { echo "container: $tool is needed" >&2; exit 1; }
done
certs=/etc/ssl/certs/ca-certificates.crt
[ -f "$certs" ] || { echo "container: $certs is needed (apt-get install ca-certificates)" >&2; exit 1; }

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null' EXIT
root=$(buildah mount "$ctr")

# A program and every library it loads, at the paths its loader looks in.
copy_with_libraries() { # program destination
  install -D -m 0755 "$1" "$root$2"
  ldd "$1" | awk '/=> \//{print $3} /^\t\//{print $1}' | while read -r lib; do
    real=$(readlink -f "$lib")
    # Its own mode: the loader must stay executable.
    [ -e "$root$lib" ] || install -D -m "$(stat -c %a "$real")" "$real" "$root$lib"
  done
}
copy_with_libraries "$tree/shardline" /usr/bin/shardline
copy_with_libraries "$(command -v journalctl)" /usr/bin/journalctl

install -D -m 0644 "$certs" "$root$certs"
install -d -m 0755 "$root/etc/shardline"
install -m 0644 packaging/container/shardline.toml packaging/container/host-logs.toml \
  "$root/etc/shardline/"
install -D -m 0644 "$tree/LICENSE" "$root/usr/share/doc/shardline/LICENSE"
cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/usr/sbin/nologin
shardline:x:$uid:$uid:shardline log forwarder:/var/lib/shardline:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
shardline:x:$uid:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
install -d -m 1777 "$root/tmp"
install -d -m 0750 -o "$uid" -g "$uid" "$root/var/lib/shardline" "$root/run/shardline"

buildah config \
  --user "$uid:$uid" \
  --workingdir /var/lib/shardline \
  --volume /var/lib/shardline \
  --port 9717/tcp \
  --env PATH=/usr/bin \
  --env SSL_CERT_FILE="$certs" \
  --stop-signal SIGTERM \
  --entrypoint '["/usr/bin/shardline"]' \
  --cmd '["run", "--config", "/etc/shardline/shardline.toml"]' \
  --label org.opencontainers.image.title=shardline \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
buildah umount "$ctr" >/dev/null
buildah commit --quiet --rm "$ctr" "localhost/shardline:$version" >/dev/null
trap - EXIT
rm -f "$archive"
buildah push --quiet "localhost/shardline:$version" "oci-archive:$archive:shardline:$version"
