//! `ringcast doctor --json` on the machine running the tests: the document parses, lists every check once with a
//! level and a message, carries a fix on every WARN/FAIL, and the exit status says whether anything failed.

use std::process::Command;

const CHECKS: [&str; 15] = [
    "kernel",
    "io_uring",
    "nofile",
    "memlock",
    "somaxconn",
    "syn_backlog",
    "port_range",
    "file_max",
    "nr_open",
    "conntrack",
    "ehash",
    "thp",
    "governor",
    "cores",
    "write_mark",
];

fn doctor(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg("doctor")
        .arg("--json")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("running ringcast doctor");
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

#[test]
fn doctor_json_lists_every_check_and_its_exit_status_matches() {
    let (code, json) = doctor(&["--cores", "1", "--backlog", "8192"]);
    let checks = json["checks"].as_array().expect("a checks array");
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, CHECKS, "every check, once, in order");
    let mut fails = 0;
    for c in checks {
        let level = c["level"].as_str().expect("a level");
        assert!(["OK", "INFO", "WARN", "FAIL"].contains(&level), "{c}");
        assert!(!c["message"].as_str().expect("a message").is_empty(), "{c}");
        if level == "WARN" || level == "FAIL" {
            assert!(
                c["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "a fix: {c}"
            );
        }
        fails += usize::from(level == "FAIL");
    }
    assert_eq!(json["fails"].as_u64(), Some(fails as u64));
    assert_eq!(json["ok"].as_bool(), Some(fails == 0));
    assert_eq!(
        code,
        Some(if fails == 0 { 0 } else { 1 }),
        "exit 1 exactly when something fails"
    );
    // The configuration given on the command line is the one checked.
    assert_eq!(json["config"]["reactors"].as_u64(), Some(1));
    assert_eq!(json["config"]["backlog"].as_i64(), Some(8192));
    let somaxconn = &checks[4];
    assert!(
        somaxconn["message"]
            .as_str()
            .unwrap_or_default()
            .contains("8192"),
        "{somaxconn}"
    );
    assert!(
        json["facts"]["allowed_cpus"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
}

#[test]
fn a_limit_this_machine_meets_passes_the_nofile_check() {
    // 1 connection per core fits any RLIMIT_NOFILE ≥ 1024.
    let (_, json) = doctor(&["--cores", "1", "--max-connections-per-core", "1"]);
    let nofile = json["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "nofile"))
        .expect("the nofile check")
        .clone();
    assert_eq!(nofile["level"], "OK", "{nofile}");
}

#[test]
fn an_invalid_configuration_is_an_error_not_a_report() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["doctor", "--cores", "0"])
        .output()
        .expect("running ringcast doctor");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cores"));
}
