//! The systemd unit (hardening score, `systemd-analyze verify`), the Debian
//! package of the release (unpacked into a scratch root, its agent checking its
//! own shipped config) and its RPM (read back with `rpm -qp`): both made by
//! `packaging/release.sh` from the release's one binary. `.ci/test` runs it and
//! installs `systemd-analyze` and `rpm` when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::release::{artifact, release_binary, run, text, GLIBC_FLOOR};

/// Highest `systemd-analyze security` exposure the unit may have ("OK" is up to
/// 4.9; this is the project's own bar).
const MAX_EXPOSURE: f64 = 2.5;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit() -> PathBuf {
    root().join("packaging/systemd/shardline.service")
}

/// Regression (issue 14, row 3): the unit set no `LimitNOFILE` (systemd's soft
/// default, 1024, is below the default connections of one socket), and its comment
/// said SIGHUP was ignored while it reloads the configuration.
#[test]
fn systemd_unit_sets_the_descriptor_limit_and_says_sighup_reloads() {
    let text = std::fs::read_to_string(unit()).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(settings.contains(&"LimitNOFILE=65536"), "{text}");
    assert!(
        settings.contains(&"ExecReload=/bin/kill -HUP $MAINPID"),
        "{text}"
    );
    assert!(!text.contains("ignored"), "{text}");
    assert!(text.contains("SIGHUP reloads the configuration"), "{text}");
}

#[test]
fn systemd_unit_exposure_is_at_most_2_5() {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit()));
    let all = text(&out);
    let line = all
        .lines()
        .find(|l| l.contains("Overall exposure level for shardline.service:"))
        .unwrap_or_else(|| panic!("no overall exposure in\n{all}"));
    let exposure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} above {MAX_EXPOSURE}:\n{all}"
    );
    assert!(line.contains("OK"), "{line}");
}

/// The unit, with its commands pointed at `binary`, passes `systemd-analyze verify`
/// with nothing to say (it exits 0 even for unknown keys, so warnings count too).
pub fn verify_unit(unit_text: &str, binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shardline.service");
    std::fs::write(
        &path,
        unit_text.replace("/usr/bin/shardline", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    let all = text(&out);
    assert!(out.status.success(), "verify failed:\n{all}");
    assert!(all.trim().is_empty(), "verify complains:\n{all}");
}

#[test]
fn systemd_unit_verifies() {
    verify_unit(
        &std::fs::read_to_string(unit()).unwrap(),
        Path::new(env!("CARGO_BIN_EXE_shardline")),
    );
}

#[test]
fn systemd_verify_catches_a_misspelt_key() {
    // The check above must be able to fail.
    let unit_text = std::fs::read_to_string(unit())
        .unwrap()
        .replace("WatchdogSec=", "WatchdogSek=");
    let result = std::panic::catch_unwind(|| {
        verify_unit(&unit_text, Path::new(env!("CARGO_BIN_EXE_shardline")))
    });
    assert!(result.is_err(), "a misspelt key passed verification");
}

/// The package's control data: its name and dependency, the config as its only
/// conffile, and a postinst that creates the user and the state directory.
fn check_deb_control(dir: &Path, deb: &Path) {
    let info = run(Command::new("dpkg-deb").arg("--info").arg(deb));
    let info = text(&info);
    assert!(info.contains("Package: shardline"), "{info}");
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    let libc = depends
        .split(", ")
        .find_map(|d| d.strip_prefix("libc6 (>= ")?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no libc6 version in {depends}"));
    let libc: Vec<u32> = libc.split('.').map(|n| n.parse().unwrap()).collect();
    assert!(libc <= GLIBC_FLOOR.to_vec(), "{depends}");
    assert!(depends.split(", ").any(|d| d == "adduser"), "{depends}");
    let conffiles = run(Command::new("dpkg-deb").args(["--ctrl-tarfile"]).arg(deb));
    let ctrl = dir.join("control");
    std::fs::create_dir(&ctrl).unwrap();
    let mut tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&ctrl)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &conffiles.stdout).unwrap();
    assert!(tar.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(ctrl.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/shardline/shardline.toml"
    );
    let postinst = std::fs::read_to_string(ctrl.join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --quiet --system --group"),
        "{postinst}"
    );
    assert!(
        postinst.contains("adduser --quiet shardline adm"),
        "{postinst}"
    );
    assert!(postinst.contains("/var/lib/shardline"), "{postinst}");
    let sh = run(Command::new("sh").arg("-n").arg(ctrl.join("postinst")));
    assert!(sh.status.success(), "postinst syntax:\n{}", text(&sh));
}

/// The package unpacked into `dir/root`: the binary (which runs and accepts the
/// shipped config), the unit and the config as in the source tree.
fn check_deb_contents(dir: &Path, deb: &Path) {
    let root = dir.join("root");
    let x = run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    assert!(x.status.success(), "{}", text(&x));
    let binary = root.join("usr/bin/shardline");
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(release_binary(dir)).unwrap(),
        "the package holds the release's binary"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&binary).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755);
    let unit_text =
        std::fs::read_to_string(root.join("lib/systemd/system/shardline.service")).unwrap();
    assert_eq!(unit_text, std::fs::read_to_string(unit()).unwrap());
    let config = root.join("etc/shardline/shardline.toml");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        std::fs::read_to_string(root_file("config/shardline.toml")).unwrap()
    );

    let version = run(Command::new(&binary).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("shardline {}", env!("CARGO_PKG_VERSION"))
    );
    let validate = run(Command::new(&binary)
        .args(["validate", "--config"])
        .arg(&config));
    assert!(validate.status.success(), "{}", text(&validate));
    assert!(text(&validate).contains(": ok"));
    // The pages the README links to sit beside it, so its links resolve.
    for page in doc_pages() {
        let packaged = std::fs::read(root.join("usr/share/doc/shardline/docs").join(&page));
        assert!(
            packaged.unwrap() == std::fs::read(root_file("docs").join(&page)).unwrap(),
            "docs/{page} differs in the package (a release older than the tree?)"
        );
    }
    // The unit as packaged, with the packaged binary.
    verify_unit(&unit_text, &binary);
}

/// The Markdown pages of docs/, by file name, sorted.
fn doc_pages() -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(root_file("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    pages.sort();
    assert!(pages.len() > 5, "{pages:?}");
    pages
}

/// The release's Debian package, unpacked into a scratch root.
#[test]
fn debian_package_installs_the_binary_unit_config_and_maintainer_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let deb = artifact(".deb");
    check_deb_control(dir.path(), &deb);
    check_deb_contents(dir.path(), &deb);
}

fn root_file(p: &str) -> PathBuf {
    root().join(p)
}

/// `rpm -qp FLAG` of the package: its standard output.
fn rpm_query(rpm: &Path, flag: &str) -> String {
    let out = run(Command::new("rpm").args(["-qp", flag]).arg(rpm));
    assert!(out.status.success(), "rpm -qp {flag}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files, the config as a conffile an upgrade leaves alone, the binary's mode.
fn check_rpm_files(rpm: &Path) {
    let query = |flag: &str| rpm_query(rpm, flag);
    let files: Vec<String> = query("-l").lines().map(str::to_owned).collect();
    let mut expected: Vec<String> = [
        "/etc/shardline/shardline.toml",
        "/usr/bin/shardline",
        "/usr/lib/systemd/system/shardline.service",
        "/usr/share/doc/shardline/README.md",
    ]
    .map(str::to_owned)
    .to_vec();
    expected.extend(
        doc_pages()
            .iter()
            .map(|p| format!("/usr/share/doc/shardline/docs/{p}")),
    );
    assert_eq!(files, expected);
    // The config is a conffile that an upgrade does not replace.
    assert_eq!(
        query("--configfiles").trim(),
        "/etc/shardline/shardline.toml"
    );
    // %config(noreplace): an edited config survives an upgrade untouched.
    let flags = query("--qf=[%{FILENAMES} %{FILEFLAGS:fflags}\n]");
    assert!(
        flags
            .lines()
            .any(|l| l == "/etc/shardline/shardline.toml cn"),
        "{flags}"
    );
    assert!(
        flags
            .lines()
            .any(|l| l == "/usr/share/doc/shardline/README.md d"),
        "{flags}"
    );
    let dump = query("--dump");
    let binary = dump
        .lines()
        .find(|l| l.starts_with("/usr/bin/shardline "))
        .unwrap();
    assert!(
        binary.split(' ').nth(4).unwrap().ends_with("755"),
        "{binary}"
    );
}

/// The scriptlets do what each must, and the shipped scripts parse.
fn check_rpm_scripts(rpm: &Path) {
    let scripts = rpm_query(rpm, "--scripts");
    for (part, needle) in [
        ("preinstall", "useradd -r -g shardline"),
        ("preinstall", "systemd-journal"),
        (
            "postinstall",
            "install -d -o shardline -g shardline -m 0750 /var/lib/shardline",
        ),
        ("postinstall", "try-restart shardline.service"),
        ("preuninstall", "disable --now shardline.service"),
        ("postuninstall", "daemon-reload"),
    ] {
        let section = scripts
            .split("scriptlet")
            .skip_while(|s| !s.trim_end().ends_with(part))
            .nth(1)
            .unwrap_or_else(|| panic!("no {part} scriptlet:\n{scripts}"));
        assert!(
            section.contains(needle),
            "{part} lacks {needle:?}:\n{scripts}"
        );
    }
    for s in ["pre", "post", "preun", "postun"] {
        let sh = run(Command::new("sh")
            .arg("-n")
            .arg(root_file(&format!("packaging/rpm/{s}.sh"))));
        assert!(sh.status.success(), "{s}.sh syntax:\n{}", text(&sh));
    }
}

/// What it needs of the host: useradd, systemd, and a glibc no newer than the
/// release's floor (RHEL 8's 2.28).
fn check_rpm_requires(rpm: &Path) {
    let requires = rpm_query(rpm, "--requires");
    assert!(requires.lines().any(|l| l == "shadow-utils"), "{requires}");
    assert!(requires.lines().any(|l| l == "systemd"), "{requires}");
    let newest = requires
        .lines()
        .filter_map(|l| l.split("(GLIBC_").nth(1))
        .filter_map(|v| v.split(')').next())
        .map(|v| {
            v.split('.')
                .map(|n| n.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        })
        .max()
        .expect("glibc requirements listed");
    assert!(
        newest <= GLIBC_FLOOR.to_vec(),
        "needs glibc {newest:?}:\n{requires}"
    );
}

/// The release's RPM, read back with `rpm -qp` (Debian's `rpm`): the package
/// RHEL 8 and 9 and Amazon Linux 2023 hosts install.
#[test]
fn rpm_package_holds_the_binary_unit_config_and_scripts() {
    let rpm = artifact(".rpm");
    check_rpm_files(&rpm);
    check_rpm_scripts(&rpm);
    check_rpm_requires(&rpm);
    // The release's one binary.
    let dir = tempfile::tempdir().unwrap();
    let digest = run(Command::new("sha256sum").arg(release_binary(dir.path())));
    let digest = text(&digest).split_whitespace().next().unwrap().to_owned();
    let digests = rpm_query(&rpm, "--qf=[%{FILENAMES} %{FILEDIGESTS}\n]");
    assert!(
        digests
            .lines()
            .any(|l| l == format!("/usr/bin/shardline {digest}")),
        "{digests}"
    );
}
