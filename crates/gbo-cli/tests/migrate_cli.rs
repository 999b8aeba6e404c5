//! `gbo migrate` bad input through the real binary: exit 2, a message naming the value and what is allowed. The
//! migrations themselves run against real PostgreSQL in gbo-ops' `migrate_pg.rs`.

use std::process::Command;

fn gbo(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gbo"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("gbo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_jobs_connection_strings_and_ports_exit_2() {
    let (code, _, stderr) = gbo(&["migrate", "local-to-container", "--jobs", "0"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid --jobs 0: use a number from 1 to 64"), "{stderr}");
    let (code, _, stderr) = gbo(&["migrate", "local-to-container", "--host", "host=127.0.0.1 port=notaport"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid connection string"), "{stderr}");
    let (code, _, stderr) = gbo(&["migrate", "container-to-local"], &[("PGPORT", "99999")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("PGPORT `99999` is not a port number"), "{stderr}");
    let (code, _, stderr) = gbo(&["migrate", "container-to-local", "--tenant", "Bad_Tenant!"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid --tenant `Bad_Tenant!`"), "{stderr}");
}
