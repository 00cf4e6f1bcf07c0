//! `warden check-config` on the example configurations shipped in the
//! repository and on invalid files, each checked by the real binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::{ConfigDir, Setup};

/// Runs `warden check-config FILE`.
fn check_config(file: &Path) -> Output {
    support::warden_command(&["check-config"])
        .arg(file)
        .output()
        .expect("run warden check-config")
}

/// Returns stdout and stderr of `output` as one text.
fn text_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Collects every `.toml` file under `dir`, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("read examples directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn config_examples_pass_check_config() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    if !examples.is_dir() {
        // Without an examples/ directory there is nothing to check.
        eprintln!("no examples directory at {}", examples.display());
        return;
    }
    let files = toml_files(&examples);

    assert!(!files.is_empty(), "examples/ holds no .toml file");
    for file in files {
        let output = check_config(&file);
        assert!(
            output.status.success(),
            "{} failed check-config:\n{}",
            file.display(),
            text_of(&output)
        );
    }
}

#[test]
fn config_test_setup_passes_check_config() {
    let files = ConfigDir::write(&Setup::permissive(), 8787);

    let output = check_config(&files.config);

    assert!(output.status.success(), "{}", text_of(&output));
}

/// Writes `text` as a config file and returns the check-config output.
fn check_text(text: &str) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, text).expect("write config");
    let output = check_config(&file);
    (dir, output)
}

#[test]
fn config_invalid_values_name_their_key() {
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:8787\"\nlistn = 1\n",
            "listn",
        ),
        (
            "[identity]\nleeway_seconds = 3600\n",
            "identity.leeway_seconds",
        ),
        ("[limits]\nmax_body_bytes = 10\n", "limits.max_body_bytes"),
        ("[server]\nlisten = \"localhost\"\n", "server.listen"),
        (
            "[server]\nallowed_origins = [\"http://localhost:3000/app\"]\n",
            "server.allowed_origins",
        ),
        ("[upstreams.fs]\ncommand = \"x\"\n", "policy.dir"),
        (
            "[policy]\ndir = \"/nonexistent/warden-policies\"\n",
            "policy.dir",
        ),
        (
            "[upstreams.a__b]\ncommand = \"x\"\n[policy]\ndir = \".\"\n",
            "upstreams.a__b",
        ),
        (
            "[[trust_domain]]\nname = \"acme.test\"\nbundle = \"missing.json\"\n",
            "trust_domain[0].bundle",
        ),
    ];
    for (text, key) in cases {
        let (_dir, output) = check_text(text);
        let output_text = text_of(&output);
        assert!(!output.status.success(), "accepted:\n{text}");
        assert!(output_text.contains(key), "{text}\ngave:\n{output_text}");
    }
}
