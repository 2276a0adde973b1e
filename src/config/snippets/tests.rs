//! Tests of conf.d snippets: merged in name order, blocks adding up, a key set
//! twice named with both files, and `load` reading them beside the config.

use std::path::Path;

use super::{dir as snippet_dir, files, merge};
use crate::config::{load, ConfigError};

fn merged(parts: &[(&str, &str)]) -> Result<toml::Table, Vec<String>> {
    let (mut into, mut origins, mut problems) = (toml::Table::new(), Vec::new(), Vec::new());
    for (file, text) in parts {
        let t: toml::Table = toml::from_str(text).unwrap();
        merge(&mut into, t, Path::new(file), &mut origins, &mut problems);
    }
    if problems.is_empty() {
        Ok(into)
    } else {
        Err(problems)
    }
}

#[test]
fn tables_merge_and_blocks_add_up_in_file_order() {
    let t = merged(&[
        (
            "main.toml",
            "[kinesis]\nstream = \"s\"\n[[socket]]\npath = \"/a\"\n",
        ),
        (
            "conf.d/10-app.toml",
            "[kinesis]\nregion = \"r\"\n[[file]]\ninclude = [\"/x\"]\n[[socket]]\npath = \"/b\"\n",
        ),
    ])
    .unwrap();
    assert_eq!(t["kinesis"]["stream"].as_str(), Some("s"));
    assert_eq!(t["kinesis"]["region"].as_str(), Some("r"));
    let paths: Vec<_> = t["socket"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/a", "/b"]);
    assert_eq!(t["file"].as_array().unwrap().len(), 1);
}

#[test]
fn a_key_set_in_two_files_names_both() {
    let problems = merged(&[
        (
            "main.toml",
            "[kinesis]\nstream = \"s\"\n[spool]\ndir = \"/d\"\n",
        ),
        ("conf.d/10-a.toml", "[kinesis]\nstream = \"t\"\n"),
        ("conf.d/20-b.toml", "[spool]\ndir = \"/e\"\n"),
    ])
    .unwrap_err();
    assert_eq!(
        problems,
        [
            "kinesis.stream is set in main.toml and again in conf.d/10-a.toml: set it in one file",
            "spool.dir is set in main.toml and again in conf.d/20-b.toml: set it in one file",
        ]
    );
}

#[test]
fn load_reads_the_snippets_beside_the_config_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("shardline.toml");
    std::fs::write(&main, "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\n[spool]\ndir = \"/var/lib/shardline\"\n").unwrap();
    // Without conf.d: the file alone.
    assert!(files(&snippet_dir(&main, None)).unwrap().is_empty());
    assert!(load(&main).is_err(), "no sources yet");
    let d = dir.path().join("conf.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("20-b.toml"), "[[socket]]\npath = \"/run/b.sock\"\n").unwrap();
    std::fs::write(d.join("10-a.toml"), "[[socket]]\npath = \"/run/a.sock\"\n").unwrap();
    std::fs::write(d.join("notes.txt"), "not toml").unwrap();
    std::fs::write(d.join(".10-a.toml.swp"), "[[").unwrap();
    let c = load(&main).unwrap();
    let paths: Vec<_> = c
        .sockets
        .iter()
        .map(|s| s.path.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/run/a.sock", "/run/b.sock"]);
    // A broken snippet is named with its line.
    std::fs::write(d.join("30-c.toml"), "[[socket]\n").unwrap();
    match load(&main) {
        Err(ConfigError::Parse { path, message }) => {
            assert_eq!(path, d.join("30-c.toml"));
            assert!(message.contains("line 1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn include_dir_names_another_directory_and_only_the_main_file_sets_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("shardline.toml");
    let base = "[kinesis]\nstream = \"logs\"\nregion = \"us-east-1\"\n[spool]\ndir = \"/var/lib/shardline\"\n";
    std::fs::write(&main, format!("include_dir = \"apps\"\n{base}")).unwrap();
    for d in ["conf.d", "apps"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
        let socket = format!("[[socket]]\npath = \"/run/{d}.sock\"\n");
        std::fs::write(dir.path().join(d).join("a.toml"), socket).unwrap();
    }
    let c = load(&main).unwrap();
    let paths: Vec<_> = c.sockets.iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, [std::path::PathBuf::from("/run/apps.sock")]);
    std::fs::write(dir.path().join("apps/b.toml"), "include_dir = \"/etc\"\n").unwrap();
    match load(&main) {
        Err(ConfigError::Invalid { problems, .. }) => assert!(
            problems
                .iter()
                .any(|p| p.contains("only the main config file")),
            "{problems:?}"
        ),
        other => panic!("{other:?}"),
    }
}
