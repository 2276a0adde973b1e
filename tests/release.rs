//! The release `packaging/release.sh` makes (in `SHARDLINE_DIST`, by default
//! `target/dist`; `.ci/test` runs it first): the portable binary's glibc floor,
//! its stripping and separate debug info, the checksums, and the tarball's
//! installer run into a scratch root and back out. The packages made from the
//! same binary are checked in packaging.rs, the container image in
//! release/image.rs.

mod image;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The oldest glibc the release runs on (RHEL 8); its symbol versions are the
/// newest the binary may ask for.
pub const GLIBC_FLOOR: [u32; 2] = [2, 28];

/// The stripped binary may be at most this large (bytes).
/// (15 MB until compression added zstd and gzip: 0.36 MB of code; 16 MB until
/// the operator's tools (spool survey, redrive, delivered files, the
/// environment and snippets): 16.29 MB; see docs/benchmarks.md, "The release
/// binary".)
const MAX_BINARY_BYTES: u64 = 16_500_000;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn run(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?} ({e}); .ci/test installs it"))
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The release directory.
pub fn dist() -> PathBuf {
    let dir = std::env::var_os("SHARDLINE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/dist"));
    assert!(
        dir.join("SHA256SUMS").is_file(),
        "no release in {}: run packaging/release.sh --image first (.ci/test does)",
        dir.display()
    );
    dir
}

/// The one artifact in the release whose name ends with `suffix`.
pub fn artifact(suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dist())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "artifacts ending in {suffix}: {found:?}");
    found.into_iter().next().unwrap()
}

/// The tarball unpacked into `dir`; returns its top directory.
pub fn unpack(dir: &Path) -> PathBuf {
    let tarball = artifact("-linux.tar.gz");
    let out = run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir));
    assert!(out.status.success(), "{}", text(&out));
    let name = tarball.file_name().unwrap().to_string_lossy();
    dir.join(name.trim_end_matches(".tar.gz"))
}

/// The release's binary, as the tarball holds it.
pub fn release_binary(dir: &Path) -> PathBuf {
    unpack(dir).join("shardline")
}

/// The GLIBC_x.y symbol versions `binary`'s dynamic symbol table asks for.
fn glibc_versions(binary: &Path) -> Vec<Vec<u32>> {
    let out = run(Command::new("objdump").arg("-T").arg(binary));
    assert!(out.status.success(), "{}", text(&out));
    let mut versions: Vec<Vec<u32>> = String::from_utf8_lossy(&out.stdout)
        .split("GLIBC_")
        .skip(1)
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()
                .unwrap()
                .trim_end_matches('.')
                .split('.')
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

/// The newest glibc symbol version `binary` needs.
fn newest_glibc(binary: &Path) -> Vec<u32> {
    glibc_versions(binary)
        .pop()
        .unwrap_or_else(|| panic!("{} asks for no glibc symbol", binary.display()))
}

#[test]
fn release_binary_needs_no_glibc_symbol_above_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let binary = release_binary(dir.path());
    let newest = newest_glibc(&binary);
    assert!(
        newest <= GLIBC_FLOOR.to_vec(),
        "the release binary needs GLIBC_{newest:?}, above {GLIBC_FLOOR:?}"
    );
    // The check reads what it claims: the test build, linked against this
    // host's newer glibc, is above the floor.
    let host_build = newest_glibc(Path::new(env!("CARGO_BIN_EXE_shardline")));
    assert!(host_build > GLIBC_FLOOR.to_vec(), "{host_build:?}");
    // And it runs.
    let version = run(Command::new(&binary).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("shardline {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Section names of an ELF file, from `readelf -S`.
fn sections(file: &Path) -> Vec<String> {
    let out = run(Command::new("readelf").args(["-S", "-W"]).arg(file));
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(']').nth(1))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The GNU build id `readelf -n` prints for `file`.
fn build_id(file: &Path) -> String {
    let out = run(Command::new("readelf").arg("-n").arg(file));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .unwrap_or_else(|| panic!("{} has no build id:\n{}", file.display(), text(&out)))
}

#[test]
fn release_binary_is_stripped_and_its_debug_info_is_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let binary = release_binary(dir.path());
    let size = std::fs::metadata(&binary).unwrap().len();
    assert!(size <= MAX_BINARY_BYTES, "{size} bytes");
    let stripped = sections(&binary);
    assert!(
        !stripped
            .iter()
            .any(|s| [".debug_info", ".debug_line", ".symtab"].contains(&s.as_str())),
        "{stripped:?}"
    );
    assert!(
        stripped.iter().any(|s| s == ".gnu_debuglink"),
        "{stripped:?}"
    );
    let debug = artifact("-linux.debug");
    // gdb finds the debug file by the name in .gnu_debuglink or by build id.
    let link = run(Command::new("readelf")
        .args(["-p", ".gnu_debuglink"])
        .arg(&binary));
    let debug_name = debug.file_name().unwrap().to_string_lossy().into_owned();
    assert!(text(&link).contains(&debug_name), "{}", text(&link));
    assert_eq!(build_id(&binary), build_id(&debug));
    let info = sections(&debug);
    for needed in [".debug_line", ".symtab"] {
        assert!(info.iter().any(|s| s == needed), "{needed}: {info:?}");
    }
}

#[test]
fn checksums_cover_every_artifact() {
    let dist = dist();
    let out = run(Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&dist));
    assert!(out.status.success(), "{}", text(&out));
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let mut listed: Vec<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS")
        .collect();
    present.sort();
    assert_eq!(listed, present);
    for suffix in [".tar.gz", ".debug", ".deb", ".rpm", "-oci.tar"] {
        assert!(listed.iter().any(|n| n.ends_with(suffix)), "{suffix}");
    }
}

#[test]
fn tarball_holds_the_binary_unit_config_docs_licence_and_installer() {
    let dir = tempfile::tempdir().unwrap();
    let tree = unpack(dir.path());
    let same = |packed: &str, source: &str| {
        assert_eq!(
            std::fs::read(tree.join(packed)).unwrap(),
            std::fs::read(root().join(source)).unwrap(),
            "{packed}"
        );
    };
    same("shardline.service", "packaging/systemd/shardline.service");
    same("shardline.toml", "config/shardline.toml");
    same("README.md", "README.md");
    same("LICENSE", "packaging/LICENSE");
    same("install.sh", "packaging/tarball/install.sh");
    same("docs/configuration.md", "docs/configuration.md");
    for exe in ["shardline", "install.sh"] {
        let mode = std::fs::metadata(tree.join(exe))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{exe}");
    }
    let out = run(Command::new("sh").arg("-n").arg(tree.join("install.sh")));
    assert!(out.status.success(), "{}", text(&out));
}

/// A root with only the account files useradd needs, and the groups adm and
/// systemd-journal.
fn scratch_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    for (file, text) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\nadm:x:4:\nsystemd-journal:x:101:\n"),
        ("shadow", "root:*:19000:0:99999:7:::\n"),
        ("gshadow", "root:*::\nadm:*::\nsystemd-journal:!::\n"),
    ] {
        std::fs::write(root.join("etc").join(file), text).unwrap();
    }
    root
}

fn install(tree: &Path, root: &Path, args: &[&str]) -> String {
    let out = run(Command::new(tree.join("install.sh"))
        .arg("--root")
        .arg(root)
        .args(args));
    assert!(out.status.success(), "install.sh {args:?}:\n{}", text(&out));
    text(&out)
}

/// The `name` line of a scratch root's `etc/file`, split at `:`.
fn account(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    std::fs::read_to_string(root.join("etc").join(file))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .map(|l| l.split(':').map(str::to_owned).collect())
}

/// Everything a fresh install lays down, as the packages do.
fn check_installed(tree: &Path, root: &Path) {
    let binary = root.join("usr/local/bin/shardline");
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(tree.join("shardline")).unwrap()
    );
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/shardline.service")).unwrap();
    assert!(unit
        .contains("ExecStart=/usr/local/bin/shardline run --config /etc/shardline/shardline.toml"));
    assert!(!unit.contains("/usr/bin/shardline"), "{unit}");
    crate::packaging::verify_unit(
        &unit.replace("/usr/local/bin/shardline", "/usr/bin/shardline"),
        &binary,
    );
    let config = root.join("etc/shardline/shardline.toml");
    let validate = run(Command::new(&binary)
        .args(["validate", "--config"])
        .arg(&config));
    assert!(validate.status.success(), "{}", text(&validate));
    assert!(root
        .join("usr/local/share/doc/shardline/docs/configuration.md")
        .is_file());
    assert!(root.join("usr/local/share/doc/shardline/LICENSE").is_file());

    let user = account(root, "passwd", "shardline").expect("user shardline");
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system user: {user:?}");
    assert_eq!(user[5], "/var/lib/shardline");
    assert!(user[6].ends_with("nologin"), "{user:?}");
    let group = account(root, "group", "shardline").expect("group shardline");
    assert_eq!(user[3], group[2]);
    for g in ["adm", "systemd-journal"] {
        let members = account(root, "group", g).unwrap()[3].clone();
        assert!(
            members.split(',').any(|m| m == "shardline"),
            "{g}: {members}"
        );
    }
    let spool = std::fs::metadata(root.join("var/lib/shardline")).unwrap();
    assert_eq!(spool.mode() & 0o777, 0o750);
    assert_eq!(
        (spool.uid(), spool.gid().to_string()),
        (uid, group[2].clone())
    );
}

/// Every file (not directory) under `root`, as paths inside it (`/etc/passwd`),
/// sorted; symbolic links are listed, not followed.
pub fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                dirs.push(p);
            } else {
                found.push(format!("/{}", p.strip_prefix(root).unwrap().display()));
            }
        }
    }
    found.sort();
    found
}

/// Files left under `root` other than the account files (and their backups).
fn leftovers(root: &Path) -> Vec<String> {
    files_under(root)
        .into_iter()
        .filter(|f| !f.starts_with("/etc/") || f.matches('/').count() > 2)
        .collect()
}

#[test]
fn tarball_installer_installs_upgrades_and_uninstalls_in_a_scratch_root() {
    let dir = tempfile::tempdir().unwrap();
    let tree = unpack(dir.path());
    let root = scratch_root(dir.path());
    install(&tree, &root, &[]);
    check_installed(&tree, &root);

    // An upgrade keeps the edited config and puts the new example beside it.
    let config = root.join("etc/shardline/shardline.toml");
    let edited = std::fs::read_to_string(&config).unwrap() + "\n# edited\n";
    std::fs::write(&config, &edited).unwrap();
    let said = install(&tree, &root, &[]);
    assert!(said.contains("shardline.toml.new"), "{said}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let users = passwd
        .lines()
        .filter(|l| l.starts_with("shardline:"))
        .count();
    assert_eq!(users, 1, "{passwd}");

    // Uninstalling keeps the config, the spool and its records, and the user.
    std::fs::write(root.join("var/lib/shardline/segment"), b"records").unwrap();
    install(&tree, &root, &["--uninstall"]);
    for gone in [
        "usr/local/bin/shardline",
        "etc/systemd/system/shardline.service",
        "usr/local/share/doc/shardline",
    ] {
        assert!(!root.join(gone).exists(), "{gone}");
    }
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert!(root.join("var/lib/shardline/segment").exists());
    assert!(account(&root, "passwd", "shardline").is_some());

    // --purge removes the rest: config, spool, user and group.
    install(&tree, &root, &["--uninstall", "--purge"]);
    assert_eq!(leftovers(&root), Vec::<String>::new());
    assert!(account(&root, "passwd", "shardline").is_none());
    assert!(account(&root, "group", "shardline").is_none());
    let adm = account(&root, "group", "adm").unwrap();
    assert_eq!(adm[3], "", "{adm:?}");
}
