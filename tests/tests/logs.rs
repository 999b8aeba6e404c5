//! Logs never fill the disk: written past their caps inside a real installed container, the journal and the files
//! under `/opt/gbo/logs` stay under them, and the service writing its log goes on writing.

use gbo_components::render::logs;
use gbo_tests::{lxd, require_test_image, TestTenant};

fn inside(container: &str, script: &str) -> String {
    gbo_tests::lxc_ok(&["exec", container, "--", "sh", "-c", script])
}

fn size(container: &str, path: &str) -> u64 {
    inside(container, &format!("stat -c %s {path}")).parse().expect("a size")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_and_the_log_files_stay_under_their_caps() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let installed = t.install(&["cache"]);
    assert_eq!(installed.code, 0, "{}", installed.all());
    let cache = t.container("cache");
    assert_eq!(inside(&cache, &format!("systemctl is-active {}", logs::LOGCAP_TIMER)), "active");

    // A log file written far past its cap by something other than its writer, then the cap run.
    let cap = u64::from(logs::LOG_FILE_CAP_MIB) * 1024 * 1024;
    inside(&cache, "head -c 48M /dev/zero | tr '\\0' 'x' >> /opt/gbo/logs/cache.log");
    assert!(size(&cache, "/opt/gbo/logs/cache.log") > cap);
    inside(&cache, &format!("systemctl start {}", logs::LOGCAP_SERVICE));
    assert!(size(&cache, "/opt/gbo/logs/cache.log") <= cap, "cache.log is over its cap");
    assert_eq!(size(&cache, "/opt/gbo/logs/cache.log.1"), u64::from(logs::LOG_FILE_KEEP_MIB) * 1024 * 1024);
    // Redis goes on writing to its file (it keeps it open in append mode): a restart logs again.
    inside(&cache, "systemctl restart cache.service");
    let tail = inside(&cache, "tail -c 2000 /opt/gbo/logs/cache.log");
    assert!(tail.contains("Ready to accept connections") || tail.contains("Server initialized"), "{tail}");
    // A link planted among the logs is never followed by the cap (it runs as root inside the container).
    inside(&cache, "head -c 20M /dev/zero > /root/big && ln -s /root/big /opt/gbo/logs/planted.log");
    inside(&cache, &format!("systemctl start {}", logs::LOGCAP_SERVICE));
    assert_eq!(size(&cache, "/root/big"), 20 * 1024 * 1024, "the cap followed a link");

    // The journal: more than its cap written, its disk usage stays under it.
    inside(
        &cache,
        "for i in $(seq 1 60); do head -c 1500000 /dev/urandom | base64 -w 30000 | systemd-cat -t gbot-flood; done; \
         journalctl --flush; journalctl --rotate",
    );
    let usage = inside(&cache, "du -sb /var/log/journal 2>/dev/null | cut -f1 || echo 0");
    let usage: u64 = usage.parse().unwrap_or(0);
    let max = 64 * 1024 * 1024 + 8 * 1024 * 1024;
    assert!(usage <= max, "the journal uses {usage} bytes, over {} + one file", logs::JOURNAL_MAX);
    assert!(usage > 0, "nothing was journaled: the flood proves nothing");
}
