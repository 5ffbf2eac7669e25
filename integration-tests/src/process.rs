//! Herald as a child process, for fault tests that kill it with SIGKILL.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use herald::Settings;

/// Settings as `HERALD_*` environment variables for a child process.
pub fn settings_env(settings: &Settings) -> Vec<(String, String)> {
    let mut env = vec![
        ("HERALD_LISTEN".to_owned(), settings.listen.to_string()),
        (
            "HERALD_DATA_DIR".to_owned(),
            settings.data_dir.display().to_string(),
        ),
        ("HERALD_LOG".to_owned(), "warn".to_owned()),
        (
            "HERALD_DELIVERY__POLL_INTERVAL_MS".to_owned(),
            settings.delivery.poll_interval_ms.to_string(),
        ),
        (
            "HERALD_DELIVERY__CLAIM_LEASE_SECS".to_owned(),
            settings.delivery.claim_lease_secs.to_string(),
        ),
        (
            "HERALD_DELIVERY__RETRY_SCHEDULE_SECS".to_owned(),
            format!("{:?}", settings.delivery.retry_schedule_secs),
        ),
    ];
    if let (Some(nats), Some(db)) = (&settings.nats_url, &settings.database_url) {
        let n = &settings.nats;
        env.extend([
            ("HERALD_NATS_URL".to_owned(), nats.clone()),
            ("HERALD_DATABASE_URL".to_owned(), db.clone()),
            ("HERALD_NATS__STREAM".to_owned(), n.stream.clone()),
            (
                "HERALD_NATS__SUBJECT_PREFIX".to_owned(),
                n.subject_prefix.clone(),
            ),
            ("HERALD_NATS__CONSUMER".to_owned(), n.consumer.clone()),
            (
                "HERALD_NATS__DEAD_LETTER_SUBJECT".to_owned(),
                n.dead_letter_subject.clone(),
            ),
            (
                "HERALD_NATS__CONTROL_SUBJECT".to_owned(),
                n.control_subject.clone(),
            ),
        ]);
    }
    if settings.auth.allow_unauthenticated {
        env.push((
            "HERALD_AUTH__ALLOW_UNAUTHENTICATED".to_owned(),
            "true".to_owned(),
        ));
    }
    env
}

/// A free loopback port (bound and released; good enough on a test machine).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A running `herald serve` child.
pub struct HeraldProcess {
    child: tokio::process::Child,
    pub base_url: String,
}

impl HeraldProcess {
    /// Starts `binary serve` with `env` and waits until `/readyz` answers 200.
    pub async fn start(binary: &str, env: &[(String, String)], listen: SocketAddr) -> Self {
        let child = tokio::process::Command::new(binary)
            .arg("serve")
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("http://{listen}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "herald did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            base_url: format!("http://{listen}/fhir"),
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}
