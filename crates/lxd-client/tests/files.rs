//! Files against the real daemon: push/pull with owner and mode, a 200 MB streamed push with bounded memory,
//! mkdir_all, recursive push_dir, symlinks, delete.

mod common;

use common::{client, lxc, peak_rss_kib, Container, CountingSink};
use lxd_client::{FileContent, FileOptions};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn push_pull_owner_mode_symlink_delete() {
    let lxd = client().await;
    let c = Container::create(&lxd, "files", false).await;
    lxd.push_bytes(&c.name, "/root/gbot.txt", "secret\n", FileOptions::owned(1001, 1001, 0o640)).await.expect("push");
    let pulled = lxd.pull(&c.name, "/root/gbot.txt").await.expect("pull");
    assert_eq!((pulled.uid, pulled.gid, pulled.mode), (1001, 1001, 0o640));
    assert_eq!(lxd.read_file(&c.name, "/root/gbot.txt").await.expect("read"), b"secret\n");
    // The `lxc` CLI sees the same bytes.
    assert_eq!(lxc(&["file", "pull", &format!("{}/root/gbot.txt", c.name), "-"]), "secret\n");

    let append = FileOptions { append: true, ..FileOptions::owned(1001, 1001, 0o640) };
    lxd.push_bytes(&c.name, "/root/gbot.txt", "more\n", append).await.expect("append");
    assert_eq!(lxd.read_file(&c.name, "/root/gbot.txt").await.expect("read"), b"secret\nmore\n");

    lxd.mkdir_all(&c.name, "/opt/gbot/a/b/c", FileOptions::owned(1001, 1001, 0o750)).await.expect("mkdir_all");
    lxd.mkdir_all(&c.name, "/opt/gbot/a/b/c", FileOptions::root(0o755)).await.expect("mkdir_all again is fine");
    let dir = lxd.pull(&c.name, "/opt/gbot/a/b").await.expect("dir");
    assert_eq!((dir.uid, dir.mode), (1001, 0o750));
    assert!(matches!(&dir.content, FileContent::Directory(entries) if entries == &["c".to_string()]), "{dir:?}");

    lxd.symlink(&c.name, "/opt/gbot/link", "/root/gbot.txt").await.expect("symlink");
    let link = lxd.pull(&c.name, "/opt/gbot/link").await.expect("pull link");
    assert!(matches!(&link.content, FileContent::Symlink(target) if target == "/root/gbot.txt"), "{link:?}");

    lxd.delete_file(&c.name, "/root/gbot.txt").await.expect("delete");
    assert!(lxd.stat(&c.name, "/root/gbot.txt").await.expect("stat").is_none());
    lxd.delete_file(&c.name, "/root/gbot.txt").await.expect("deleting an absent file is fine");
    let err = lxd.push_bytes(&c.name, "/no/such/dir/file", "x", FileOptions::root(0o644)).await.expect_err("no parent");
    assert!(err.is_not_found() || matches!(err, lxd_client::Error::Api { .. }), "{err:?}");
}

#[tokio::test]
async fn two_hundred_megabytes_are_streamed_both_ways() {
    let lxd = client().await;
    let c = Container::create(&lxd, "files-big", false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.bin");
    const SIZE: u64 = 200 * 1024 * 1024;
    {
        let mut file = tokio::fs::File::create(&path).await.expect("create");
        let chunk: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..SIZE / chunk.len() as u64 {
            file.write_all(&chunk).await.expect("write");
        }
        file.flush().await.expect("flush");
    }
    let before = peak_rss_kib();
    let file = tokio::fs::File::open(&path).await.expect("open");
    lxd.push_file(&c.name, "/root/big.bin", file, FileOptions::root(0o600)).await.expect("push 200 MB");
    let mut sink = CountingSink::default();
    let pulled = lxd.pull_to(&c.name, "/root/big.bin", &mut sink).await.expect("pull 200 MB");
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert_eq!((pulled, sink.bytes), (SIZE, SIZE));
    assert!(grown_mib < 32, "peak RSS grew {grown_mib} MiB moving 200 MiB: not streamed");
    let info = lxd.pull(&c.name, "/root/big.bin").await.expect("stat");
    assert_eq!(info.mode, 0o600);
}

#[tokio::test]
async fn push_dir_is_recursive_and_creates_parents() {
    let lxd = client().await;
    let c = Container::create(&lxd, "files-dir", false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("etc/conf.d")).expect("mkdir");
    std::fs::write(dir.path().join("top.txt"), "top").expect("write");
    std::fs::write(dir.path().join("etc/app.conf"), "a=1").expect("write");
    std::fs::write(dir.path().join("etc/conf.d/extra.conf"), "b=2").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path().join("etc/app.conf"), std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let count = lxd
        .push_dir(&c.name, dir.path(), "/srv/gbot/deep/tree", FileOptions::owned(1001, 1001, 0o644))
        .await
        .expect("push_dir");
    assert_eq!(count, 3);
    assert_eq!(lxd.read_file(&c.name, "/srv/gbot/deep/tree/etc/conf.d/extra.conf").await.expect("read"), b"b=2");
    let conf = lxd.pull(&c.name, "/srv/gbot/deep/tree/etc/app.conf").await.expect("pull");
    assert_eq!((conf.uid, conf.gid, conf.mode), (1001, 1001, 0o600), "host mode kept, owner from options");
    let top = lxd.pull(&c.name, "/srv/gbot/deep/tree").await.expect("pull dir");
    match top.content {
        FileContent::Directory(mut entries) => {
            entries.sort();
            assert_eq!(entries, vec!["etc".to_string(), "top.txt".to_string()]);
        }
        _ => panic!("not a directory"),
    }
}
