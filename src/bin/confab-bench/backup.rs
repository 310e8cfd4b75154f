//! The backup scenario: a room of many messages, then a live backup (`GET /api/v1/backup`)
//! taken while posters keep posting — how long it takes, how fast it streams, how long the
//! posts wait meanwhile (writers pause while the snapshot is staged) — and the restore of
//! the archive into a new folder with `admin restore`.

use super::files::fill_room;
use super::*;

/// Posts from `posters` clients until `stop`; each post's latency (µs).
async fn post_until(
    admin: &Client,
    room: u64,
    posters: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<u32> {
    let mut tasks = Vec::new();
    for p in 0..posters.max(1) {
        let mut c = admin.another();
        c.use_token(admin.session_id().unwrap_or_default());
        let stop = stop.clone();
        tasks.push(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                if c.send_text(room, &format!("during {p}-{i}")).await.is_ok() {
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            lat
        });
    }
    let mut all: Vec<u32> = join_all(tasks).await.into_iter().flatten().collect();
    all.sort_unstable();
    all
}

fn latency_report(lat: &[u32], secs: f64) -> serde_json::Value {
    json!({
        "posts": lat.len(),
        "postsPerSec": (lat.len() as f64 / secs.max(0.001)).round(),
        "p50Ms": percentile(lat, 0.50),
        "p99Ms": percentile(lat, 0.99),
        "maxMs": percentile(lat, 1.0),
    })
}

pub(super) async fn run_backup(n: u64, posters: usize, server: &Server) -> serde_json::Value {
    let Some(tmp) = server._tmp.as_ref().map(|t| t.0.clone()) else {
        return json!({ "error": "--backup-messages needs a server started by the bench" });
    };
    let mut admin = Client::new(&server.addr, trust(server)).expect("client");
    admin
        .login("admin", &server.admin_password)
        .await
        .expect("login");
    let room = admin.create_room("backup", &[]).await.expect("room");
    let t = Instant::now();
    fill_room(&admin, room, n, 64).await;
    let fill_secs = t.elapsed().as_secs_f64();
    let storage_bytes = admin.server_health().await.unwrap_or_default()["storageBytes"]
        .as_u64()
        .unwrap_or(0);

    // Posting alone, for comparison.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = Instant::now();
    let baseline = {
        let stop2 = stop.clone();
        let timer = async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop2.store(true, Ordering::Relaxed);
        };
        let (lat, _) = tokio::join!(post_until(&admin, room, posters, stop.clone()), timer);
        lat
    };
    let baseline_secs = t.elapsed().as_secs_f64();

    // Posting while the backup is taken.
    let archive = tmp.with_extension("backup.tar");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t = Instant::now();
    let mut backup_client = admin.another();
    backup_client.use_token(admin.session_id().unwrap_or_default());
    let (during, backup) = {
        let stop2 = stop.clone();
        let archive = archive.clone();
        let take = async move {
            // Let the posters get going first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let started = Instant::now();
            let mut file = std::fs::File::create(&archive).expect("archive file");
            let got = backup_client.get_to("/api/v1/backup", &mut file).await;
            let secs = started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop2.store(true, Ordering::Relaxed);
            (got, secs)
        };
        tokio::join!(post_until(&admin, room, posters, stop.clone()), take)
    };
    let during_secs = t.elapsed().as_secs_f64();
    let (backup_result, backup_secs) = backup;
    let archive_bytes = match backup_result {
        Ok((200, bytes, _)) => bytes,
        Ok((status, _, _)) => return json!({ "error": format!("backup answered {status}") }),
        Err(e) => return json!({ "error": e.to_string() }),
    };

    // The archive restored into a new folder, offline.
    let restored = tmp.with_extension("restored");
    let exe = std::env::current_exe().expect("current exe");
    let t = Instant::now();
    let out = Command::new(exe.with_file_name("confab-server"))
        .arg("--storage-dir")
        .arg(&restored)
        .args(["admin", "restore"])
        .arg(&archive)
        .output()
        .expect("run admin restore");
    let restore_secs = t.elapsed().as_secs_f64();
    let restore_said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let _ = std::fs::remove_file(&archive);
    let _ = std::fs::remove_dir_all(&restored);
    json!({
        "backup": {
            "messages": n,
            "fillSeconds": (fill_secs * 10.0).round() / 10.0,
            "storageBytes": storage_bytes,
            "archiveBytes": archive_bytes,
            "backupSeconds": (backup_secs * 100.0).round() / 100.0,
            "archiveMBPerSec": ((archive_bytes as f64 / 1e6 / backup_secs.max(0.001)) * 10.0).round() / 10.0,
            "postingAlone": latency_report(&baseline, baseline_secs),
            "postingDuringBackup": latency_report(&during, during_secs),
            "restoreSeconds": (restore_secs * 100.0).round() / 100.0,
            "restoreOk": out.status.success(),
            "restoreSaid": restore_said,
        }
    })
}
