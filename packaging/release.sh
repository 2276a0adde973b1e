#!/usr/bin/env bash
# shardline's release: builds one portable binary and makes every artifact from it.
#
#   packaging/release.sh [--target TRIPLE] [--out DIR] [--image]
#
# The binary is linked against glibc 2.28 symbol versions (RHEL 8, Amazon Linux
# 2023, Debian 11, Ubuntu 20.04 and newer) with Zig as the C compiler and linker
# (cargo-zigbuild, Zig from PyPI's ziglang package); the build fails if the binary
# asks for a newer symbol. It is stripped and its debug info kept beside it. From
# that one binary come, in DIR (default target/dist):
#
#   shardline-VERSION-ARCH-linux.tar.gz   binary, unit, example config, docs,
#                                         licence and install.sh (hosts without
#                                         dpkg or rpm)
#   shardline-VERSION-ARCH-linux.debug    the debug info (gdb finds it by build id
#                                         or by the binary's debug link)
#   shardline_VERSION-1_ARCH.deb          Debian 11+, Ubuntu 20.04+
#   shardline-VERSION-1.ARCH.rpm          RHEL 8+, Amazon Linux 2023
#   shardline-VERSION-ARCH-oci.tar        with --image: the container image, an
#                                         OCI archive (needs root and buildah)
#   SHA256SUMS                            `sha256sum -c SHA256SUMS` checks them all
#
# What it needs comes from the package registries, pinned below, and is
# installed under target/release-tools on first use: Zig and cargo-zigbuild
# (PyPI), cargo-deb and cargo-generate-rpm (crates.io); binutils for objcopy and
# objdump.
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC_FLOOR=2.28
ZIGLANG_VERSION=0.15.2
CARGO_ZIGBUILD_VERSION=0.24.1
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

target=x86_64-unknown-linux-gnu
out=target/dist
image=false
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --image) image=true; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

arch=${target%%-*}
if [ "$image" = true ] && [ "$arch" != "$(uname -m)" ]; then
  # The image takes its C library and journalctl from this machine.
  echo "release.sh: --image builds only for this machine's architecture ($(uname -m))" >&2
  exit 2
fi
case "$target" in
  x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu) ;;
  *) echo "release.sh: $target is not a release target (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu)" >&2; exit 2 ;;
esac
if ! rustc --print sysroot >/dev/null || [ ! -d "$(rustc --print sysroot)/lib/rustlib/$target/lib" ]; then
  echo "release.sh: the Rust standard library for $target is not installed (rustup target add $target)" >&2
  exit 1
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
name=shardline-$version-$arch-linux
tools=$PWD/target/release-tools
build=$PWD/target/release-build
export PATH="$tools/bin:$tools/zig/bin:$PATH"

# --- the pinned toolchain ----------------------------------------------------
need_cargo_tool() { # crate version command
  if ! "$3" --version 2>/dev/null | grep -q "$2"; then
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --root "$tools" "$1" --version "$2"
  fi
}
# Zig and cargo-zigbuild both come from PyPI as built wheels, in one virtual
# environment (cargo-zigbuild finds Zig through its python3).
if ! "$tools/zig/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIGLANG_VERSION" ||
   ! "$tools/zig/bin/cargo-zigbuild" --version 2>/dev/null | grep -q "$CARGO_ZIGBUILD_VERSION"; then
  rm -rf "$tools/zig"
  python3 -m venv "$tools/zig"
  "$tools/zig/bin/python" -m pip install --quiet --disable-pip-version-check \
    "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
fi
need_cargo_tool cargo-deb "$CARGO_DEB_VERSION" cargo-deb
need_cargo_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" cargo-generate-rpm
for tool in objcopy objdump readelf; do
  command -v "$tool" >/dev/null || { echo "release.sh: $tool is needed (apt-get install binutils)" >&2; exit 1; }
done

# --- the binary --------------------------------------------------------------
# Its own target directory: the dist profile (Cargo.toml) and Zig's linker share
# nothing with a development build. A build id lets gdb and debuginfod match the binary
# with its debug info.
target_env=$(echo "$target" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${target_env}_RUSTFLAGS=-C link-arg=-Wl,--build-id=sha1"
CARGO_TARGET_DIR=$build cargo zigbuild --locked --profile dist --bin shardline \
  --target "$target.$GLIBC_FLOOR"
built=$build/$target/dist/shardline

# No symbol from a glibc newer than the floor.
newest=$(objdump -T "$built" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
if [ "$(printf '%s\n%s\n' "$newest" "$GLIBC_FLOOR" | sort -V | tail -n1)" != "$GLIBC_FLOOR" ]; then
  echo "release.sh: the binary needs GLIBC_$newest, above the floor $GLIBC_FLOOR:" >&2
  objdump -T "$built" | grep "GLIBC_$newest" >&2
  exit 1
fi

# Only this release's own files are replaced in DIR.
mkdir -p "$out"
rm -f "$out"/shardline[-_]* "$out/SHA256SUMS"
rm -rf "$build/stage"
mkdir -p "$build/stage/$target/release"
stripped=$build/stage/$target/release/shardline
objcopy --only-keep-debug --compress-debug-sections=zlib "$built" "$out/$name.debug"
chmod 0644 "$out/$name.debug"
objcopy --strip-all --add-gnu-debuglink="$out/$name.debug" "$built" "$stripped"
if [ "$arch" = "$(uname -m)" ]; then
  "$stripped" --version >/dev/null
fi

# --- the tarball -------------------------------------------------------------
tree=$build/stage/$name
mkdir -p "$tree/docs"
install -m 0755 "$stripped" "$tree/shardline"
install -m 0755 packaging/tarball/install.sh "$tree/install.sh"
install -m 0644 packaging/systemd/shardline.service "$tree/shardline.service"
install -m 0644 config/shardline.toml "$tree/shardline.toml"
install -m 0644 README.md "$tree/README.md"
install -m 0644 packaging/LICENSE "$tree/LICENSE"
install -m 0644 docs/*.md "$tree/docs/"
tar -C "$build/stage" --owner=0 --group=0 --numeric-owner --sort=name \
  -czf "$out/$name.tar.gz" "$name"

# --- the packages ------------------------------------------------------------
CARGO_TARGET_DIR=$build/stage cargo deb --no-build --no-strip --quiet \
  --target "$target" --output "$out/"
cargo generate-rpm --target "$target" --target-dir "$build/stage" \
  --auto-req builtin --payload-compress xz --output "$out/"

# --- the container image -----------------------------------------------------
if [ "$image" = true ]; then
  packaging/container/build.sh "$tree" "$out/shardline-$version-$arch-oci.tar" "$version"
fi

(cd "$out" && rm -f SHA256SUMS && sha256sum -- * > SHA256SUMS)
echo "release: $(cd "$out" && pwd)"
cat "$out/SHA256SUMS"
