//! Support for end-to-end tests: running the `omirrd` binary and giving
//! each test host its own files under a temporary directory.
//!
//! The tests in this directory are integration tests of the `omirrd`
//! package (see its Cargo.toml), so cargo builds the binary before running
//! them and tells us where it is; `OMIRRD_BIN` overrides it.
//!
//! [`cluster`] runs several hosts at once, each a real `omirrd` process,
//! and compares their trees. Helpers that are not about `omirrd` (waiting,
//! writing files, digests of trees) are in the `omirr-testkit` crate.
#![allow(dead_code)] // each test file uses its own part of this module

pub mod cluster;
pub mod rogue;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One cluster at a time within a test binary: the time bounds of the
/// tests are for a few daemons on two cores, not for clusters competing.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `omirrd` binary under test.
pub fn omirrd_bin() -> PathBuf {
    std::env::var_os("OMIRRD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_omirrd")))
}

/// Runs `omirrd` with `args` and returns its output.
pub fn omirrd(args: &[&str]) -> Output {
    Command::new(omirrd_bin())
        .args(args)
        .env_remove("OMIRR_LOG")
        .output()
        .expect("run omirrd")
}

/// The repository's `etc/` directory.
pub fn etc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Kills a process when the test ends, however it ends.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// Dials `127.0.0.1:port` as host `as_host` would, presenting the key in
/// `state_dir` and expecting `peer`'s pinned key, and says whether the peer
/// refused the connection (an alert or a close before its first message)
/// rather than greeting it.
pub fn tls_probe(port: u16, state_dir: &Path, peers_file: &Path, peer: &str) -> bool {
    use omirr_net::tls;
    let identity = omirr_net::identity::load(state_dir).expect("probe identity");
    let text = std::fs::read_to_string(peers_file).expect("peers file");
    let (peers, _) = omirr_config::peers::Peers::parse(&text, peers_file).expect("peers");
    let pins = tls::SharedPins::new(tls::PinSet::from_peers(&peers));
    let config = tls::client_config(&identity, pins, peer).expect("client config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let connector = tokio_rustls::TlsConnector::from(config);
        let Ok(mut stream) = connector.connect(tls::server_name(peer), tcp).await else {
            return true;
        };
        // TLS 1.3: the server judges the client's certificate after the
        // client's handshake is done; the first read tells.
        let first = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            omirr_proto::read_message(&mut stream),
        )
        .await;
        !matches!(first, Ok(Ok(Some(omirr_proto::Message::Hello(_)))))
    })
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
pub fn peak_rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}
