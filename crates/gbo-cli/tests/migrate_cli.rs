//! `gbo migrate` bad input through the real binary: exit 2, a message naming the value and what is allowed. The
//! migrations themselves run against real PostgreSQL in gbo-ops' `migrate_pg.rs`.

#[test]
fn bad_jobs_connection_strings_and_ports_exit_2() {
    let (code, _, stderr) = gbo_tests::gbo_env(&["migrate", "local-to-container", "--jobs", "0"], &[]).parts();
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid --jobs 0: use a number from 1 to 64"), "{stderr}");
    let (code, _, stderr) =
        gbo_tests::gbo_env(&["migrate", "local-to-container", "--host", "host=127.0.0.1 port=notaport"], &[]).parts();
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid connection string"), "{stderr}");
    let (code, _, stderr) = gbo_tests::gbo_env(&["migrate", "container-to-local"], &[("PGPORT", "99999")]).parts();
    assert_eq!(code, 2);
    assert!(stderr.contains("PGPORT `99999` is not a port number"), "{stderr}");
    let (code, _, stderr) =
        gbo_tests::gbo_env(&["migrate", "container-to-local", "--tenant", "Bad_Tenant!"], &[]).parts();
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid --tenant `Bad_Tenant!`"), "{stderr}");
}
