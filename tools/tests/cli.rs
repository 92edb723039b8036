//! The binary's command line: bad flags and bad configuration files exit non-zero with a message
//! naming the option; `status` and `member` against nothing exit non-zero.

mod common;

use common::{free_ports, run_bin};

fn member_flags(ports: &[u16]) -> Vec<String> {
    vec![
        "--member".to_string(),
        format!("1=127.0.0.1:{}/127.0.0.1:{}", ports[0], ports[1]),
    ]
}

fn assert_refused(args: &[&str], expected: &[&str]) {
    let (status, stderr) = run_bin(args);
    assert!(!status.success(), "{args:?} was accepted");
    for word in expected {
        assert!(
            stderr.contains(word),
            "{args:?}: {word:?} missing from: {stderr}"
        );
    }
}

#[test]
fn bad_flags_exit_non_zero_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let members = member_flags(&free_ports(2));
    let base = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["serve", "--cluster-id", "7", "--data-dir", data]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        args.extend(members.iter().cloned());
        args.extend(extra.iter().map(|arg| arg.to_string()));
        if !extra.contains(&"--app") {
            args.extend(["--app".to_string(), "kv".to_string()]);
        }
        args
    };
    let run = |extra: &[&str], expected: &[&str]| {
        let args = base(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(&args, expected);
    };
    run(&["--id", "x"], &["--id"]);
    run(&["--id", "2"], &["id", "not among the members"]);
    run(
        &["--id", "1", "--sync", "sometimes"],
        &["--sync", "sometimes"],
    );
    run(&["--id", "1", "--app", "sql"], &["--app", "sql"]);
    run(
        &["--id", "1", "--snapshot-entries", "0"],
        &["--snapshot-entries"],
    );
    run(
        &["--id", "1", "--heartbeat-ticks", "500"],
        &["--heartbeat-ticks"],
    );
    run(&["--id", "1", "--member", "2=127.0.0.1:1"], &["--member"]);
    run(&["--id", "1", "--bogus"], &["--bogus"]);
    assert_refused(&["serve", "--id", "1"], &["--cluster-id"]);
}

#[test]
fn bad_config_files_exit_non_zero_naming_file_and_option() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(4);
    let good = format!(
        "id = 1\ncluster_id = 7\ndata_dir = \"{}\"\napp = \"kv\"\n\n\
         [[members]]\nid = 1\npeer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n\n\
         [[members]]\nid = 2\npeer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n\n\
         [tuning]\nsync = \"fdatasync\"\n",
        dir.path().join("data").display(),
        ports[0],
        ports[1],
        ports[2],
        ports[3]
    );
    let path = dir.path().join("node.toml");
    let path_text = path.to_str().unwrap();
    let cases: [(&str, &str, &[&str]); 5] = [
        ("app = \"kv\"", "app = \"kv\"\nspeed = 11", &["speed"]),
        ("sync = \"fdatasync\"", "sync = \"nope\"", &["tuning.sync"]),
        ("id = 2\n", "id = 1\n", &["members", "listed twice"]),
        ("cluster_id = 7", "cluster_id = \"seven\"", &["cluster_id"]),
        (
            "peer_addr = \"127.0.0.1:",
            "peer_addr = \"localhost-ish:",
            &["peer_addr"],
        ),
    ];
    for (from, to, expected) in cases {
        assert!(good.contains(from), "{from}");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let mut words = expected.to_vec();
        words.push("node.toml");
        assert_refused(&["serve", "--config", path_text], &words);
    }
    // A flag overrides the (good) file and is checked too.
    std::fs::write(&path, &good).unwrap();
    assert_refused(
        &["serve", "--config", path_text, "--segment-bytes", "1000"],
        &["node.toml", "--segment-bytes"],
    );
    assert_refused(
        &["serve", "--config", "/nonexistent/node.toml"],
        &["/nonexistent/node.toml"],
    );
}

#[test]
fn status_of_nothing_exits_non_zero() {
    let port = free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    assert_refused(&["status", "--addr", &addr], &[addr.as_str()]);
}

#[test]
fn member_against_nothing_or_with_bad_flags_exits_non_zero() {
    let port = free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    assert_refused(
        &[
            "member",
            "remove",
            "2",
            "--connect",
            &addr,
            "--timeout-ms",
            "1000",
        ],
        &["lockstep member", "no member answers"],
    );
    assert_refused(
        &["member", "add", "4", "--connect", &addr],
        &["--peer-addr"],
    );
    assert_refused(
        &[
            "member",
            "add",
            "4",
            "--peer-addr",
            "nowhere",
            "--connect",
            &addr,
        ],
        &["--peer-addr", "nowhere"],
    );
    assert_refused(&["member", "promote", "4"], &["--connect"]);
}

/// A one-node cluster from a config file: ready line on stdout, `lockstep status` shows it
/// leading, SIGTERM exits 0.
#[test]
fn serve_from_a_file_then_status_then_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let config = format!(
        "id = 1\ncluster_id = 9\ndata_dir = \"{}\"\napp = \"journal\"\n\n\
         [[members]]\nid = 1\npeer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n",
        dir.path().join("data").display(),
        ports[0],
        ports[1]
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(common::BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut guard = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let client = format!("127.0.0.1:{}", ports[1]);
    assert_eq!(
        line.trim_end(),
        format!(
            "lockstep node 1 ready: peer 127.0.0.1:{} client {client}",
            ports[0]
        )
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = Command::new(common::BIN)
            .args(["status", "--addr", &client, "--cluster-id", "9"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && text.contains("role     leader") {
            break;
        }
        assert!(Instant::now() < deadline, "never led: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, stderr) = run_bin(&["status", "--addr", &client]);
    assert!(
        !status.success() && stderr.contains("--cluster-id"),
        "{stderr}"
    );

    let pid = guard.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = guard.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
}

#[test]
fn a_node_that_cannot_start_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let members = member_flags(&free_ports(2));
    let mut args = vec!["serve", "--id", "1", "--cluster-id", "7", "--app", "kv"];
    args.extend(["--data-dir", file.to_str().unwrap()]);
    args.extend(members.iter().map(String::as_str));
    assert_refused(&args, &["failed to start", "not-a-directory"]);
}

#[test]
fn a_node_that_fails_while_serving_exits_non_zero_naming_the_cause() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = free_ports(2);
    let members = member_flags(&ports);
    let mut args = vec!["serve", "--id", "1", "--cluster-id", "7", "--app", "kv"];
    args.extend([
        "--snapshot-entries",
        "20",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    args.extend(members.iter().map(String::as_str));
    let mut child = Command::new(common::BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        match lockstep::client::Client::connect(addr, 7, Duration::from_secs(1)) {
            Ok(client) => break client,
            Err(error) => {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("the node never answered: {error:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    // A file where the snapshot directory is: the first snapshot cannot be written, which is
    // fatal for the node.
    if data.join("snapshots").is_dir() {
        std::fs::remove_dir_all(data.join("snapshots")).unwrap();
    }
    std::fs::write(data.join("snapshots"), b"in the way").unwrap();
    // Until the node fails: refusals before it leads, then commits, then the failure.
    let mut committed = 0;
    for i in 0..2000 {
        match client.propose(format!("put {i}").as_bytes()) {
            Ok(_) => committed += 1,
            Err(_) if committed > 0 => break,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(committed > 0, "nothing committed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a failed node kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status {}", output.status);
    assert!(
        stderr.contains("failed") && stderr.contains("snapshots"),
        "{stderr}"
    );
}

/// A log of `entries` one-entry batches, made durable, in `dir`.
fn write_log(dir: &std::path::Path, entries: u64) {
    use lockstep::batch::{BatchBuilder, BatchKind};
    use lockstep::log::{Log, LogOptions};
    use lockstep::types::{LogIndex, Term};

    let options = LogOptions {
        segment_bytes: 16 << 10,
        spare_segments: 1,
        ..LogOptions::default()
    };
    let (mut log, _) = Log::open(dir, options).unwrap();
    for index in 1..=entries {
        let mut builder = BatchBuilder::default();
        builder.push(b"entry");
        log.append(&builder.finish(Term(1), LogIndex(index), BatchKind::Normal))
            .unwrap();
    }
    log.request_sync().unwrap();
    assert_eq!(log.wait_durable().unwrap(), LogIndex(entries));
}

/// Runs the binary; its exit status, stdout and stderr.
fn run_output(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let output = std::process::Command::new(common::BIN)
        .args(args)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status, text(&output.stdout), text(&output.stderr))
}

#[test]
fn log_commands_refuse_a_directory_that_holds_no_log() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().to_str().unwrap();
    for command in ["verify", "dump"] {
        let (status, stdout, stderr) = run_output(&["log", command, empty]);
        assert!(
            !status.success(),
            "log {command} accepted an empty directory: {stdout}"
        );
        assert!(
            stderr.contains("holds no log") && stderr.contains(".seg"),
            "log {command}: {stderr}"
        );
        assert!(!stdout.contains("OK"), "log {command}: {stdout}");
    }
    let missing = dir.path().join("missing");
    assert_refused(
        &["log", "verify", missing.to_str().unwrap()],
        &["is not a directory"],
    );
}

#[test]
fn log_commands_find_the_log_of_a_node_data_directory() {
    let data = tempfile::tempdir().unwrap();
    write_log(&data.path().join("log"), 5);
    for dir in [data.path().to_path_buf(), data.path().join("log")] {
        let dir = dir.to_str().unwrap();
        let (status, stdout, stderr) = run_output(&["log", "verify", dir]);
        assert!(status.success(), "log verify {dir}: {stdout}{stderr}");
        assert!(stdout.contains("records:  5 verified"), "{stdout}");
        assert!(stdout.contains("entries:  1..=5"), "{stdout}");
        let (status, stdout, stderr) = run_output(&["log", "dump", dir, "--from", "2"]);
        assert!(status.success(), "log dump {dir}: {stdout}{stderr}");
        assert_eq!(
            stdout.lines().filter(|line| !line.starts_with('#')).count(),
            4,
            "{stdout}"
        );
    }
}

/// The help of `lockstep ARGS --help`.
fn help_of(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let (status, stdout, stderr) = run_output(&args);
    assert!(status.success(), "{args:?}: {stderr}");
    stdout
}

/// The help text of `flag` (its line and the indented lines that follow), from a help page.
fn flag_help<'a>(help: &'a str, flag: &str) -> String {
    let mut lines = help
        .lines()
        .skip_while(|line| !line.trim_start().split([' ', ',']).any(|word| word == flag));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no {flag} in:\n{help}"));
    let rest = lines.take_while(|line| {
        let trimmed = line.trim_start();
        !trimmed.is_empty() && !trimmed.starts_with('-')
    });
    std::iter::once(first)
        .chain(rest)
        .collect::<Vec<&'a str>>()
        .join(" ")
}

#[test]
fn serve_help_shows_the_code_defaults() {
    let help = help_of(&["serve"]);
    let tuning = lockstep_server::Tuning::default();
    let append = flag_help(&help, "--append-mode");
    assert!(
        append.contains(&format!("[default: {}]", tuning.append_mode)),
        "{append}"
    );
    let sync = flag_help(&help, "--sync");
    assert!(
        sync.contains("`none`") && sync.contains(&format!("[default: {}]", tuning.sync)),
        "{sync}"
    );
    let segment = flag_help(&help, "--segment-bytes");
    assert!(
        segment.contains(&format!("[default: {}]", tuning.segment_bytes)),
        "{segment}"
    );
    let affinity = flag_help(&help, "--cpu-affinity");
    assert!(
        affinity.contains("network, consensus, storage, apply"),
        "{affinity}"
    );
}

#[test]
fn the_tools_share_one_cluster_id_default_and_name_timeouts_in_ms() {
    let default = format!("[default: {}]", lockstep_server::DEFAULT_CLUSTER_ID);
    for command in [&["status"][..], &["cluster"], &["member", "add"]] {
        let help = help_of(command);
        let cluster_id = flag_help(&help, "--cluster-id");
        assert!(cluster_id.contains(&default), "{command:?}: {cluster_id}");
    }
    for command in [&["status"][..], &["member", "remove"]] {
        let help = help_of(command);
        assert!(help.contains("--timeout-ms <MS>"), "{command:?}: {help}");
        assert!(!help.contains("--timeout <"), "{command:?}: {help}");
    }
    let dump = help_of(&["log", "dump"]);
    assert!(!dump.contains(&u64::MAX.to_string()), "{dump}");
    assert!(
        flag_help(&dump, "--to").contains("the last entry"),
        "{dump}"
    );
}

#[test]
fn serve_names_every_missing_required_option_at_once() {
    let (status, stderr) = run_bin(&["serve"]);
    assert!(!status.success());
    for flag in ["--id", "--cluster-id", "--data-dir", "--app", "--member"] {
        assert!(
            stderr.contains(&format!("(flag {flag})")),
            "{flag}: {stderr}"
        );
    }
}

/// Runs `lockstep serve ARGS` until its ready line, then stops it; the line.
fn serve_until_ready(args: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(common::BIN)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    read.unwrap();
    assert!(
        line.starts_with("lockstep node "),
        "no ready line; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    line
}

#[test]
fn a_tuning_only_file_and_flags_for_the_rest_start_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tuning.toml");
    std::fs::write(
        &file,
        "[tuning]\nsync = \"fdatasync\"\nsegment_bytes = 1048576\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let members = member_flags(&free_ports(2));
    let mut args = vec!["--config", file.to_str().unwrap(), "--id", "1"];
    args.extend(["--cluster-id", "7", "--app", "kv"]);
    args.extend(["--data-dir", data.to_str().unwrap()]);
    args.extend(members.iter().map(String::as_str));
    let line = serve_until_ready(&args);
    assert!(line.contains("node 1 ready"), "{line}");
}

#[test]
fn a_busy_client_port_is_named_before_the_log_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client_port = busy.local_addr().unwrap().port();
    let peer_port = free_ports(1)[0];
    let member = format!("1=127.0.0.1:{peer_port}/127.0.0.1:{client_port}");
    let args = [
        "serve",
        "--id",
        "1",
        "--cluster-id",
        "7",
        "--app",
        "kv",
        "--data-dir",
        data.to_str().unwrap(),
        "--member",
        &member,
    ];
    let (status, stderr) = run_bin(&args);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("client address 127.0.0.1:{client_port}"))
            && stderr.contains("in use")
            && stderr.contains("What to do"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&format!("127.0.0.1:{peer_port}")),
        "the free peer port is blamed: {stderr}"
    );
    assert!(
        !data.join("log").exists(),
        "the log was created before the ports were checked"
    );
    drop(busy);
}

#[test]
fn a_data_dir_that_is_a_file_is_explained_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data-file");
    std::fs::write(&file, b"x").unwrap();
    let members = member_flags(&free_ports(2));
    let mut args = vec!["serve", "--id", "1", "--cluster-id", "7", "--app", "kv"];
    args.extend(["--data-dir", file.to_str().unwrap()]);
    args.extend(members.iter().map(String::as_str));
    let (status, stderr) = run_bin(&args);
    assert!(!status.success());
    assert!(
        stderr.contains("data-file is a file, not a directory")
            && stderr.contains("--data-dir")
            && stderr.contains("What to do"),
        "{stderr}"
    );
    assert!(!stderr.contains("hint=\"\""), "{stderr}");
}
